import { expect, test } from "bun:test";
import { FakeClock } from "../../../src/core/clock.ts";
import {
  createBalancer,
  EwmaBalancer,
  LeastRequestBalancer,
  RingHashBalancer,
  RoundRobinBalancer,
  type BalancerPolicy,
} from "../../../src/proxy/balancer/index.ts";
import { endpoints, headers, noHeaders, seeded } from "./helpers.ts";

const deps = () => ({ clock: new FakeClock(), random: seeded(1) });

test("createBalancer maps each policy to its balancer, least-request by default", () => {
  expect(createBalancer({ type: "round-robin" }, deps())).toBeInstanceOf(RoundRobinBalancer);
  expect(createBalancer({ type: "least-request" }, deps())).toBeInstanceOf(LeastRequestBalancer);
  expect(createBalancer(undefined, deps())).toBeInstanceOf(LeastRequestBalancer);
  const ewma = createBalancer({ type: "ewma", decayMs: 500 }, deps());
  expect(ewma).toBeInstanceOf(EwmaBalancer);
  expect((ewma as EwmaBalancer).decayMs).toBe(500);
  expect((createBalancer({ type: "ewma" }, deps()) as EwmaBalancer).decayMs).toBe(10_000);
  expect(createBalancer({ type: "ring-hash", cookie: "s" }, deps())).toBeInstanceOf(RingHashBalancer);
});

test("every policy picks from a list and returns undefined for an empty one", () => {
  const policies: BalancerPolicy[] = [
    { type: "round-robin" },
    { type: "least-request" },
    { type: "ewma" },
    { type: "ring-hash", header: "x-user" },
  ];
  const eps = endpoints(1, 1, 1);
  for (const policy of policies) {
    const b = createBalancer(policy, deps());
    expect(eps).toContain(b.pick(eps, headers({ "x-user": "u" }))!);
    expect(eps).toContain(b.pick(eps, noHeaders)!);
    expect(b.pick([], noHeaders)).toBeUndefined();
  }
});

test("an unknown policy type is rejected", () => {
  expect(() => createBalancer({ type: "random" } as unknown as BalancerPolicy, deps())).toThrow(/unknown balancer policy/);
});
