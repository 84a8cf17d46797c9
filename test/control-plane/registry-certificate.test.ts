/**
 * Each endpoint keeps the certificate its sidecar's connection last proved (signer and end),
 * written at registration and again by the first heartbeat after a renewal, and only then:
 * `mesh ca rotate --complete` reads it to name sidecars still on an old root.
 */
import { afterAll, expect, test } from "bun:test";
import { endpointKey } from "../../src/control-plane/keys.ts";
import { Registry } from "../../src/control-plane/registry.ts";
import type { EndpointRecord } from "../../src/control-plane/registration.ts";
import { openSqliteStore } from "../../src/store/index.ts";
import { tempDir } from "../helpers/cli.ts";

const tmp = tempDir("mesh-registry-certificate-");
const store = openSqliteStore(tmp.path);
afterAll(() => {
  store.close();
  tmp.cleanup();
});

const identity = "spiffe://mesh.local/ns/default/sa/orders";
const reg = { namespace: "default", service: "orders", address: "127.0.0.1", port: 9000, weight: 1 };
const key = endpointKey(reg.namespace, reg.service, reg.address, reg.port);
const stored = async () => {
  const kv = (await store.get(key))!;
  return { record: JSON.parse(kv.value) as EndpointRecord, modRevision: kv.modRevision };
};

test("registration records the proven certificate; a heartbeat rewrites the endpoint only when it changed", async () => {
  const registry = new Registry(store, 60_000);
  const first = { issuerKeyId: "aa01", notAfter: "2026-12-08T00:00:00.000Z" };
  const { leaseId } = await registry.register(identity, reg, true, first);
  const registered = await stored();
  expect(registered.record.certificate).toEqual(first);

  await registry.heartbeat(identity, reg, leaseId, true, { ...first });
  expect((await stored()).modRevision).toBe(registered.modRevision);

  const renewed = { issuerKeyId: "bb02", notAfter: "2026-12-08T12:00:00.000Z" };
  await registry.heartbeat(identity, reg, leaseId, true, renewed);
  const after = await stored();
  expect(after.record).toEqual({ ...registered.record, certificate: renewed });
  expect(after.modRevision).toBeGreaterThan(registered.modRevision);

  // A heartbeat that proves nothing (none would come so, but a record is never emptied by one) leaves it.
  await registry.heartbeat(identity, reg, leaseId, true);
  expect((await stored()).record.certificate).toEqual(renewed);
});
