import { describe, expect, test } from "bun:test";
import { resolveHost, snapshotOf, type Destination } from "../../src/proxy/destinations.ts";

/** Destinations stand-ins: resolveHost only looks them up by key. */
const payments = { name: "payments", addresses: ["10.96.0.5", "fd00::5"] } as unknown as Destination;
const shopPayments = { name: "payments", addresses: [] } as unknown as Destination;
/** Claims payments' first address too: the first claimant keeps it. */
const orders = { name: "orders", addresses: ["10.96.0.5", "10.96.0.6"] } as unknown as Destination;
const snapshot = () =>
  snapshotOf(
    "v1",
    new Map([
      ["payments.shop", shopPayments],
      ["payments", payments],
      ["orders.shop", orders],
    ]),
  );

describe("resolveHost", () => {
  test.each([
    ["payments", payments],
    ["payments:80", payments],
    ["PAYMENTS", payments],
    ["payments.shop", shopPayments],
    ["payments.shop:8080", shopPayments],
    ["payments.shop.svc", shopPayments],
    ["payments.shop.svc.cluster.local", shopPayments],
    ["payments.shop.svc.cluster.local.", shopPayments],
    ["orders", undefined],
    ["payments.other", undefined],
    // By a virtual address (Service spec.addresses), with or without a port; IPv6 in any spelling.
    ["10.96.0.5", payments],
    ["10.96.0.5:80", payments],
    ["10.96.0.6", orders],
    ["[fd00::5]", payments],
    ["[FD00:0:0::5]:8080", payments],
    ["10.96.0.7", undefined],
    ["[fd00::6]:80", undefined],
  ] as const)("%s", (host, expected) => {
    const s = snapshot();
    expect(resolveHost(s, host)).toBe(expected);
    expect(resolveHost(s, host)).toBe(expected); // the memoized answer is the same
  });

  test("known hosts still resolve after a flood of unknown ones empties the memo", () => {
    const s = snapshot();
    for (let i = 0; i < 5000; i++) expect(resolveHost(s, `made-up-${i}`)).toBeUndefined();
    expect(resolveHost(s, "payments:80")).toBe(payments);
  });

  test("each snapshot resolves against its own destinations", () => {
    const before = snapshot();
    expect(resolveHost(before, "payments")).toBe(payments);
    const after = snapshotOf("v2", new Map());
    expect(resolveHost(after, "payments")).toBeUndefined();
  });
});
