/** HTTPRoute: the schema's refusals, and how a compiled route picks a backend. */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";
import type { HTTPRoute } from "../../src/config/kinds/http-route.ts";
import { manifestIssues, validManifest } from "../helpers/policies.ts";
import type { Destination, Snapshot } from "../../src/proxy/destinations.ts";
import { crossDocumentProblems } from "../../src/proxy/control/config-documents.ts";
import { compileRoutes, routedDestination, type RoutedRequest } from "../../src/proxy/routing.ts";

const route = (spec: Record<string, unknown>, name = "r") => validManifest<HTTPRoute>("HTTPRoute", spec, name);
const issues = (spec: Record<string, unknown>) => manifestIssues("HTTPRoute", spec);

/** Destinations by name, as a snapshot holds them ("name.namespace" keys). */
function snapshotWith(...names: string[]): Snapshot {
  const destinations = new Map<string, Destination>(names.map((n) => [`${n}.shop`, { name: n, namespace: "shop" } as Destination]));
  return { version: "t", destinations, routes: new Map(), byHost: () => null, byAddress: new Map() };
}
const req = (pathAndQuery: string, headers: Record<string, string> = {}, method = "GET"): RoutedRequest => ({ method, pathAndQuery, header: (n) => headers[n] });

describe("schema", () => {
  test("paths, methods, headers, backends and weights are checked, each with its place", () => {
    expect(
      issues({
        service: "payments",
        rules: [
          { matches: [{ path: { exact: "relative" } }, { path: { exact: "/a", prefix: "/b" } }, { method: "GET /" }, { headers: [{ name: "bad name", value: "x" }] }], backends: [{ service: "payments-v2" }] },
          { backends: [] },
          { backends: [{ service: "a", weight: 0 }, { service: "b", weight: 0 }] },
          { backends: [{ service: "Bad_Name" }] },
        ],
      }),
    ).toEqual([
      expect.stringMatching(/^spec\.rules\[0\]\.matches\[0\]\.path\.exact: expected a path/),
      "spec.rules[0].matches[1].path: give exact or prefix, one of the two",
      "spec.rules[0].matches[2].method: expected an HTTP method",
      "spec.rules[0].matches[3].headers[0].name: expected an HTTP header name",
      expect.stringMatching(/^spec\.rules\[1\]\.backends: /),
      "spec.rules[2].backends: every weight is 0: give one backend a share",
      expect.stringMatching(/^spec\.rules\[3\]\.backends\[0\]\.service: /),
    ]);
  });

  test("requestHeaders: the proxy's own headers, idempotency-key, a name given twice and bad values are refused", () => {
    const rule = (requestHeaders: Record<string, unknown>) => ({ service: "payments", rules: [{ backends: [{ service: "payments" }], requestHeaders }] });
    expect(issues(rule({ set: [{ name: "X-Mesh-Client-Id", value: "spiffe://x" }, { name: "host", value: "a" }], add: [{ name: "idempotency_key", value: "k" }], remove: ["traceparent", "content-length"] }))).toEqual([
      'spec.rules[0].requestHeaders.set[0].name: "x-mesh-client-id" is the proxy\'s own to set or remove; a route cannot change it',
      'spec.rules[0].requestHeaders.set[1].name: "host" is the proxy\'s own to set or remove; a route cannot change it',
      'spec.rules[0].requestHeaders.add[0].name: "idempotency-key" is the proxy\'s own to set or remove; a route cannot change it',
      'spec.rules[0].requestHeaders.remove[0]: "traceparent" is the proxy\'s own to set or remove; a route cannot change it',
      'spec.rules[0].requestHeaders.remove[1]: "content-length" is the proxy\'s own to set or remove; a route cannot change it',
    ]);
    expect(issues(rule({ set: [{ name: "x-a", value: "1" }], add: [{ name: "X_A", value: "2" }], remove: ["x-b", "x-b"] }))).toEqual([
      'spec.rules[0].requestHeaders.add[0]: "x-a" is in set already: name a header once',
      'spec.rules[0].requestHeaders.remove[1]: "x-b" is in remove already: name a header once',
    ]);
    expect(issues(rule({ set: [{ name: "x-a", value: "two\r\nlines" }], add: [] }))).toEqual([
      "spec.rules[0].requestHeaders.set[0].value: expected a header value: printable ASCII, no space at either end",
      expect.stringMatching(/^spec\.rules\[0\]\.requestHeaders\.add: /),
    ]);
  });

  test("a config's routes must name Services it has, one route per service", () => {
    const r1 = route({ service: "payments", rules: [{ backends: [{ service: "payments-v2" }, { service: "ghost" }], mirror: { service: "shadow" } }] }, "one");
    const r2 = route({ service: "payments", rules: [{ backends: [{ service: "payments" }] }] }, "two");
    const placed = [validManifest("Service", { ports: [{ name: "http", port: 80 }] }, "payments"), validManifest("Service", { ports: [{ name: "http", port: 80 }] }, "payments-v2"), r1, r2];
    expect(crossDocumentProblems(placed.map((m, i) => ({ where: `#${i}`, manifest: m as HTTPRoute })))).toEqual([
      '#2 spec.rules[0].backends[1].service: no Service "ghost" in namespace "shop"',
      '#2 spec.rules[0].mirror.service: no Service "shadow" in namespace "shop"',
      '#3 spec.service: a second HTTPRoute for "payments" in namespace "shop"',
    ]);
  });

  test("a mirror's percent is 0-100; a route whose mirror is not in the snapshot is left out whole", () => {
    expect(issues({ service: "payments", rules: [{ backends: [{ service: "payments" }], mirror: { service: "shadow", percent: 150 } }] })).toEqual(["spec.rules[0].mirror.percent: expected number ≤ 100"]);
    const mirrored = route({ service: "payments", rules: [{ backends: [{ service: "payments" }], mirror: { service: "shadow" } }] });
    expect(compileRoutes([mirrored], snapshotWith("payments")).size).toBe(0);
  });
});

describe("choosing a backend", () => {
  const snap = snapshotWith("payments", "payments-v2", "payments-canary");
  const [payments, v2, canary] = ["payments", "payments-v2", "payments-canary"].map((n) => snap.destinations.get(`${n}.shop`)!) as [Destination, Destination, Destination];
  const compiled = compileRoutes(
    [
      route({
        service: "payments",
        rules: [
          { matches: [{ headers: [{ name: "X-Canary", value: "1" }] }, { path: { prefix: "/v2" } }], backends: [{ service: "payments-canary" }] },
          { matches: [{ path: { exact: "/refunds" }, method: "post" }], backends: [{ service: "payments-v2" }] },
          { backends: [{ service: "payments", weight: 3 }, { service: "payments-v2", weight: 1 }, { service: "payments-canary", weight: 0 }] },
        ],
      }),
    ],
    snap,
  ).get(payments)!;

  test("the first rule that matches decides: a header (name in any case), a path prefix by whole segments, an exact path with a method", () => {
    expect(routedDestination(compiled, req("/x", { "x-canary": "1" })).dest).toBe(canary);
    expect(routedDestination(compiled, req("/v2")).dest).toBe(canary);
    expect(routedDestination(compiled, req("/v2/charges?x=1")).dest).toBe(canary);
    expect(routedDestination(compiled, req("/refunds", {}, "POST")).dest).toBe(v2);
    // /v2x is not under /v2, a GET is not the POST rule, a header of another value does not match: the split decides.
    expect(routedDestination(compiled, req("/v2x"), () => 0).dest).toBe(payments);
    expect(routedDestination(compiled, req("/refunds"), () => 0.99).dest).toBe(v2);
    expect(routedDestination(compiled, req("/x", { "x-canary": "2" }), () => 0).dest).toBe(payments);
  });

  test("weights split: 3 to 1, a weight of 0 never chosen", () => {
    const picks = (r: number) => routedDestination(compiled, req("/"), () => r).dest.name;
    expect([0, 0.5, 0.74, 0.75, 0.999].map(picks)).toEqual(["payments", "payments", "payments", "payments-v2", "payments-v2"]);
  });

  test("a route naming a destination the snapshot lacks is left out whole", () => {
    const partial = compileRoutes([route({ service: "payments", rules: [{ backends: [{ service: "payments-v9" }] }] })], snap);
    expect(partial.size).toBe(0);
  });
});

describe("in a sidecar's static config", () => {
  test("a route naming a Service the file lacks is refused at start, naming the route and the field", async () => {
    const dir = tempDir("mesh-route-config-");
    try {
      const path = join(dir.path, "proxy.yaml");
      writeFileSync(
        path,
        [
          "apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: { name: payments }\nspec:\n  ports: [{ name: http, port: 80 }]\n  endpoints: [{ address: 127.0.0.1, port: 9 }]\n",
          "apiVersion: mesh.dev/v1alpha1\nkind: HTTPRoute\nmetadata: { name: canary }\nspec:\n  service: payments\n  rules: [{ backends: [{ service: payments-v2 }] }]\n",
        ].join("---\n"),
      );
      const r = await mesh("proxy", "--service", "orders", "--upstream", "http://127.0.0.1:8080", "--config", path);
      expect(r.code).not.toBe(0);
      expect(r.err).toContain(`${path}#1 spec.rules[0].backends[0].service: no Service "payments-v2" in namespace "default"`);
    } finally {
      dir.cleanup();
    }
  });
});
