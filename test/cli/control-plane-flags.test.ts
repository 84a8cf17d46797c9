/**
 * `mesh control-plane` checks every flag, and the config file's values the schema cannot
 * bound, before it writes anything: a bad one exits 64 naming the flag (65 naming the
 * file's field), and the data and CA directories are not created.
 */
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";
import { freePort } from "../helpers/ports.ts";

const tmp = tempDir("mesh-cp-flags-");
afterAll(() => tmp.cleanup());

let runs = 0;
/** Runs `mesh control-plane` in a fresh directory: its result and whether it wrote anything. */
async function controlPlane(...flags: string[]) {
  const dir = join(tmp.path, String(runs++));
  const r = await mesh("control-plane", "--data-dir", join(dir, "data"), "--ca-dir", join(dir, "ca"), "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--bootstrap", "127.0.0.1:0", ...flags);
  return { ...r, wrote: existsSync(dir) };
}

function configFile(spec: string): string {
  const path = join(tmp.path, `cp-${runs}.yaml`);
  writeFileSync(path, `apiVersion: mesh.dev/v1alpha1\nkind: ControlPlaneConfig\nmetadata: {name: cp}\nspec:\n${spec}\n`);
  return path;
}

test.each([
  [["--trust-domain", "Bad TD!"], "--trust-domain: trust domain"],
  [["--cert-ttl", "1s"], "--cert-ttl: TTL is below the minimum of 2s"],
  [["--cert-ttl", "721h"], "--cert-ttl: TTL exceeds the maximum of 720h"],
  [["--lease-ttl", "999ms"], "--lease-ttl: TTL is below the minimum of 1s"],
  [["--store", "etcd", "--etcd-endpoint", "http://127.0.0.1:2379/v3"], "--etcd-endpoint: expected only scheme, host and port"],
  [["--store", "etcd", "--etcd-endpoint", "unix:///run/etcd.sock"], "--etcd-endpoint: expected an http:// or https:// URL"],
  [["--store", "etcd", "--etcd-endpoint", "http://127.0.0.1:0"], "--etcd-endpoint: expected port 1-65535"],
  [["--etcd-endpoint", "http://127.0.0.1:2379"], "--etcd-endpoint: only used with --store etcd"],
  [["--admin-identity", "spiffe://mesh.local/ns/default/sa/ops?x"], "--admin-identity:"],
  [["--admin-token-file", "/nonexistent-dir/admin-token"], "--admin-token-file: no such directory /nonexistent-dir"],
  [["--policies", "/nonexistent-dir"], "--policies:"],
])("%p exits 64 naming the flag, having written nothing", async (flags, message) => {
  const r = await controlPlane(...flags);
  expect({ code: r.code, wrote: r.wrote }).toEqual({ code: 64, wrote: false });
  expect(r.err).toContain(message);
});

test.each([
  ["  certTtl: 1s", "#0 spec.certTtl: TTL is below the minimum of 2s"],
  ["  certTtl: 721h", "#0 spec.certTtl: TTL exceeds the maximum of 720h"],
  ["  leaseTtl: 0s", "#0 spec.leaseTtl: TTL is below the minimum of 1s"],
  ["  store: {type: etcd, endpoints: [not a url]}", '--config spec.store.endpoints[0]: expected a URL like http://127.0.0.1:2379, got "not a url"'],
  ["  adminIdentities: [bogus]", '--config spec.adminIdentities[0]: "bogus" does not start with spiffe://'],
])("config %p exits 65 naming the field, having written nothing", async (spec, message) => {
  const r = await controlPlane("--config", configFile(spec));
  expect({ code: r.code, wrote: r.wrote }).toEqual({ code: 65, wrote: false });
  expect(r.err).toContain(message);
});

test("a flag is held to the bounds the file's field is", async () => {
  const r = await controlPlane("--config", configFile("  certTtl: 2s"), "--cert-ttl", "2s", "--lease-ttl", "0s");
  expect(r.code).toBe(64);
  expect(r.err).toContain("--lease-ttl: TTL is below the minimum of 1s");
});

test("the file's field is held to its bounds by its schema, so mesh validate refuses it too", async () => {
  const file = configFile("  certTtl: 1s");
  const r = await mesh("validate", file);
  expect(r.code).toBe(1);
  expect(r.err + r.out).toContain(`${file}#0 spec.certTtl: TTL is below the minimum of 2s`);
});

test("an admin token file that cannot be read is named with its flag, not a raw error", async () => {
  const dir = join(tmp.path, "token-is-a-dir");
  mkdirSync(dir, { recursive: true });
  const r = await controlPlane("--admin-token-file", dir);
  expect(r.code).toBe(65);
  expect(r.err).toContain(`--admin-token-file: cannot read or create the admin token ${dir}: EISDIR`);
});

test("an etcd no member of which answers ends the start, in bounded time, naming the flag and the endpoint", async () => {
  const endpoint = `http://127.0.0.1:${freePort()}`;
  const started = performance.now();
  const r = await controlPlane("--store", "etcd", "--etcd-endpoint", endpoint);
  expect(r.code).toBe(1);
  expect(r.err).toContain(`error: --etcd-endpoint: cannot use etcd at ${endpoint}: etcd: no member answered`);
  // The client's retries (15 s: an election takes seconds), then the answer; never a silent hang.
  expect(performance.now() - started).toBeLessThan(25_000);
}, 30_000);

test("--trust-domain that is not the existing CA's is refused, naming both, before the data directory is made", async () => {
  const ca = join(tmp.path, "existing-ca");
  expect((await mesh("ca", "init", "--trust-domain", "a.test", "--out", ca)).code).toBe(0);
  const data = join(tmp.path, "td-data");
  const r = await mesh("control-plane", "--data-dir", data, "--ca-dir", ca, "--trust-domain", "b.test", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--bootstrap", "127.0.0.1:0");
  expect(r.code).toBe(64);
  expect(r.err).toContain(`--trust-domain: the CA in ${ca} is of trust domain "a.test", not "b.test"`);
  expect(existsSync(data)).toBe(false);
});
