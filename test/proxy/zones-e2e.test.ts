/**
 * Zone-aware routing with real sidecars and services on loopback: a caller with --zone
 * sends to its zone's instance; one without a zone, or with zoneAware off, spreads over
 * both zones; and a zone whose instance is dead fails over to the other, every call
 * answered.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { fixtureFor, type EchoService } from "../helpers/mesh-fixture.ts";
import { freePort } from "../helpers/ports.ts";

const fx = fixtureFor("orders");
let inA: EchoService;
let inB: EchoService;
let zoneA: Awaited<ReturnType<typeof fx.proxy>>;
let noZone: Awaited<ReturnType<typeof fx.proxy>>;

/** A Service outside the mesh (plain HTTP endpoints) with one instance per zone; `zoneAware` in its policy. */
const service = (name: string, a: number, b: number, policy = "") => `---
apiVersion: mesh.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec:
  mtls: false
  ports: [{ name: http, port: 80 }]
  endpoints: [{ address: 127.0.0.1, port: ${a}, zone: eu-1a }, { address: 127.0.0.1, port: ${b}, zone: eu-1b }]
---
apiVersion: mesh.dev/v1alpha1
kind: DestinationPolicy
metadata: { name: ${name} }
spec:
  loadBalancer: { type: round-robin${policy} }
  outlierDetection: { consecutiveFailures: 1 }
`;

beforeAll(async () => {
  inA = fx.echo("pay-a");
  inB = fx.echo("pay-b");
  const [a, b] = [Number(new URL(inA.url).port), Number(new URL(inB.url).port)];
  const dead = await freePort();
  const config = fx.config("zones", {}, service("pay", a, b) + service("pay-off", a, b, ", zoneAware: false") + service("pay-failover", dead, b));
  zoneA = await fx.proxy("orders", fx.echo("orders-a").url, config, ["--zone", "eu-1a"]);
  noZone = await fx.proxy("orders", fx.echo("orders-n").url, config);
});

/** Which instance answered each of `n` sequential calls (status 200 each). */
async function servedBy(outbound: number, service: string, n: number): Promise<string[]> {
  const served: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await fetch(`http://127.0.0.1:${outbound}/`, { headers: { host: service } });
    expect(res.status).toBe(200);
    served.push(((await res.json()) as { service: string }).service);
  }
  return served;
}
const counts = (served: string[]) => Object.fromEntries(["pay-a", "pay-b"].map((s) => [s, served.filter((x) => x === s).length]));

describe("zones", () => {
  test("a caller in eu-1a calls the instance in eu-1a only", async () => {
    expect(counts(await servedBy(zoneA.ports.outbound, "pay", 20))).toEqual({ "pay-a": 20, "pay-b": 0 });
  });

  test("a caller without a zone, or a policy with zoneAware: false, spreads over both", async () => {
    expect(counts(await servedBy(noZone.ports.outbound, "pay", 20))).toEqual({ "pay-a": 10, "pay-b": 10 });
    expect(counts(await servedBy(zoneA.ports.outbound, "pay-off", 20))).toEqual({ "pay-a": 10, "pay-b": 10 });
  });

  test("the zone's instance dead: its first call is retried in the other zone, and the rest go there", async () => {
    expect(counts(await servedBy(zoneA.ports.outbound, "pay-failover", 10))).toEqual({ "pay-a": 0, "pay-b": 10 });
  });

  test("/config_dump shows the sidecar's zone and each endpoint's", async () => {
    const dump = (await (await fetch(`http://127.0.0.1:${zoneA.ports.admin}/config_dump`)).json()) as { zone: string; destinations: { name: string; endpoints: { zone?: string }[] }[] };
    expect(dump.zone).toBe("eu-1a");
    expect(dump.destinations.find((d) => d.name === "pay")!.endpoints.map((e) => e.zone)).toEqual(["eu-1a", "eu-1b"]);
  });
});
