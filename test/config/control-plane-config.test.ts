import { describe, expect, test } from "bun:test";
import { doc, errorsOf, specOf } from "./helpers";

const cp = (spec: string) => doc("ControlPlaneConfig", spec);

describe("ControlPlaneConfig", () => {
  test("an empty spec gets every default", () => {
    expect(specOf(cp("  {}"))).toEqual({
      api: { address: "0.0.0.0", port: 15010 },
      admin: { address: "127.0.0.1", port: 15011 },
      bootstrap: { address: "0.0.0.0", port: 15012 },
      trustDomain: "mesh.local",
      dataDir: "./data",
      store: { type: "embedded" },
      ca: { dir: "certs" },
      policiesDir: "policies",
      certTtl: 86_400_000,
      leaseTtl: 10_000,
      maxEndpointsPerService: 256,
      adminIdentities: [],
    });
  });

  test("etcd store with endpoints; explicit values win", () => {
    const spec = specOf(
      cp(
        [
          "  api: {address: 10.0.0.5}",
          "  trustDomain: corp.example",
          "  dataDir: /var/lib/mesh",
          "  store: {type: etcd, endpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379]}",
          "  ca: {dir: /etc/mesh/ca}",
          "  policiesDir: /etc/mesh/policies",
        ].join("\n"),
      ),
    );
    expect(spec).toEqual({
      api: { address: "10.0.0.5", port: 15010 },
      admin: { address: "127.0.0.1", port: 15011 },
      bootstrap: { address: "0.0.0.0", port: 15012 },
      trustDomain: "corp.example",
      dataDir: "/var/lib/mesh",
      store: { type: "etcd", endpoints: ["http://10.0.0.1:2379", "http://10.0.0.2:2379"] },
      ca: { dir: "/etc/mesh/ca" },
      policiesDir: "/etc/mesh/policies",
      certTtl: 86_400_000,
      leaseTtl: 10_000,
      maxEndpointsPerService: 256,
      adminIdentities: [],
    });
  });

  test("store: endpoints required with etcd, only allowed with etcd, never empty", () => {
    expect(errorsOf(cp("  store: {type: etcd}"))).toEqual(["m.yaml#0 spec.store.endpoints: required when type is etcd"]);
    expect(errorsOf(cp("  store: {endpoints: [http://e:2379]}"))).toEqual(["m.yaml#0 spec.store.endpoints: only allowed when type is etcd"]);
    expect(errorsOf(cp("  store: {type: etcd, endpoints: []}"))).toEqual(["m.yaml#0 spec.store.endpoints: expected at least 1 item"]);
    expect(errorsOf(cp("  store: {type: etcd, endpoints: ['']}"))).toEqual(["m.yaml#0 spec.store.endpoints[0]: must not be empty"]);
    expect(errorsOf(cp("  store: {type: consul}"))).toEqual(["m.yaml#0 spec.store.type: expected one of embedded, etcd"]);
  });

  test("listeners (the admin API on loopback only), directories, trust domain, unknown fields", () => {
    const spec = ["  api: {port: 70000}", "  admin: {address: 0.0.0.0, port: 15010}", "  dataDir: ''", "  ca: {dir: 5}", "  trustDomain: ''", "  policesDir: p"].join("\n");
    expect(errorsOf(cp(spec))).toEqual([
      "m.yaml#0 spec.api.port: expected port 1-65535",
      "m.yaml#0 spec.admin.address: must be a loopback address (127.0.0.1, ::1 or localhost): the admin API is not served off this host; from elsewhere, the admin API is served over mTLS on the API listener to --admin-identity",
      "m.yaml#0 spec.trustDomain: trust domain is empty",
      "m.yaml#0 spec.dataDir: must not be empty",
      "m.yaml#0 spec.ca.dir: expected string, got number",
      'm.yaml#0 spec: unknown field "policesDir" (did you mean "policiesDir"?)',
    ]);
  });

  test("api and admin may not share a port on overlapping addresses", () => {
    expect(errorsOf(cp("  admin: {port: 15010}"))).toEqual(["m.yaml#0 spec.admin.port: port 15010 is also used by api"]);
  });
});
