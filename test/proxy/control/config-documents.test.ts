/** A proxy validates each config version itself and refuses it whole, with every reason. */
import { expect, test } from "bun:test";
import { ConfigRejected, parseConfigDocuments, staticAddressesTaken, withStatic } from "../../../src/proxy/control/config-documents.ts";

const service = (name: string, spec: Record<string, unknown> = { ports: [{ name: "http", port: 80 }] }) => ({
  apiVersion: "mesh.dev/v1alpha1",
  kind: "Service",
  metadata: { name },
  spec,
});
const policy = (service: string) => ({ apiVersion: "mesh.dev/v1alpha1", kind: "DestinationPolicy", metadata: { name: service }, spec: { service } });

test("a valid version yields its services and policies", () => {
  const docs = parseConfigDocuments([service("payments"), policy("payments")]);
  expect(docs.services.map((s) => s.metadata.name)).toEqual(["payments"]);
  expect(docs.policies[0]!.spec.timeouts.request).toBe(15_000);
});

test("an invalid document, a foreign kind or a dangling policy refuses the whole version, naming each", () => {
  let error: unknown;
  try {
    parseConfigDocuments([service("payments", { ports: [{ name: "http", port: 0 }] }), policy("ledger"), { apiVersion: "mesh.dev/v1alpha1", kind: "ProxyConfig", metadata: { name: "x" }, spec: { upstream: "http://127.0.0.1:1" } }]);
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(ConfigRejected);
  expect((error as Error).message).toBe(
    'document 0 spec.ports[0].port: expected port 1-65535; document 2 kind: ProxyConfig is not part of a proxy\'s config; DestinationPolicy default/ledger spec.service: no Service "ledger" in namespace "default"',
  );
});

test("no two Services share a virtual address: the second is named", () => {
  const withAddress = (name: string, addresses: string[]) => service(name, { ports: [{ name: "http", port: 80 }], addresses });
  expect(() => parseConfigDocuments([withAddress("payments", ["10.96.0.5"]), withAddress("ledger", ["10.96.0.6", "10.96.0.5"])])).toThrow(
    "Service default/ledger spec.addresses: 10.96.0.5 is Service default/payments's already; no two Services share an address",
  );
  expect(parseConfigDocuments([withAddress("payments", ["10.96.0.5"]), withAddress("ledger", ["10.96.0.6"])]).services).toHaveLength(2);
});

test("a static Service's address the control plane's Service claims is named: the control plane's keeps it", () => {
  const withAddress = (name: string, addresses: string[]) => service(name, { ports: [{ name: "http", port: 80 }], addresses });
  const dynamic = parseConfigDocuments([withAddress("payments", ["10.96.0.5"])]);
  const statics = parseConfigDocuments([withAddress("ledger", ["10.96.0.6", "10.96.0.5"]), withAddress("payments", ["10.96.0.9"])]);
  expect(staticAddressesTaken(dynamic, statics)).toEqual(["static Service default/ledger: 10.96.0.5 is the control plane's Service default/payments's, which keeps it"]);
  // A static Service the control plane also defines is replaced whole, addresses and all: nothing to report.
  expect(staticAddressesTaken(dynamic, parseConfigDocuments([withAddress("payments", ["10.96.0.5"])]))).toEqual([]);
  expect(withStatic(dynamic, statics).services.map((s) => s.metadata.name)).toEqual(["payments", "ledger"]);
});
