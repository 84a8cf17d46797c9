/** `mesh proxy` refuses bad flags and bad config at start, naming the flag or file and field. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { MeshFixture } from "../helpers/mesh-fixture.ts";
import { startMesh } from "../helpers/procs.ts";

const fx = new MeshFixture();
let certs = "";
beforeAll(async () => {
  await fx.init();
  certs = await fx.issue("orders");
});
afterAll(() => fx.close());

const proxy = (...flags: string[]) => mesh("proxy", "--service", "orders", "--certs-dir", certs, ...flags);

test.each([
  ["ftp://127.0.0.1:8080", "expected an http:// URL"],
  ["http://127.0.0.1:8080/app", "expected only scheme, host and port"],
  ["not a url", "expected a URL"],
])("--upstream %s is refused with exit 64", async (upstream, message) => {
  const r = await proxy("--upstream", upstream);
  expect(r.code).toBe(64);
  expect(r.err).toContain("--upstream");
  expect(r.err).toContain(message);
});

test("a bad config file is refused naming file, document and field", async () => {
  const path = join(fx.tmp.path, "bad.yaml");
  writeFileSync(path, "apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: payments\nspec:\n  ports:\n    - name: http\n      port: 80\n  endpoints:\n    - address: 127.0.0.1\n      port: 15006\n      weight: -1\n");
  const r = await proxy("--upstream", "http://127.0.0.1:8080", "--config", path);
  expect(r.code).toBe(65);
  expect(r.err).toContain(`${path}#0 spec.endpoints[0].weight`);
});

test("a certs dir whose key belongs to another certificate is refused naming the key", async () => {
  const other = await fx.issue("payments");
  const r = await mesh("proxy", "--service", "orders", "--upstream", "http://127.0.0.1:8080",
    "--cert", join(certs, "chain.pem"), "--key", join(other, "key.pem"), "--ca", join(certs, "bundle.pem"));
  expect(r.code).toBe(65);
  expect(r.err).toContain(join(other, "key.pem"));
  expect(r.err).toContain("does not match");
});

test("ProxyConfig.logLevel applies unless --log-level is given", async () => {
  const path = join(fx.tmp.path, "quiet.yaml");
  writeFileSync(path, "apiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: orders}\nspec:\n  upstream: http://127.0.0.1:8080\n  logLevel: warn\n");
  const args = ["proxy", "--service", "orders", "--certs-dir", certs, "--config", path, "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
  const quiet = await startMesh(args);
  await Bun.sleep(100);
  expect(quiet.stderr()).not.toContain("proxy ready");
  const loud = await startMesh([...args, "--log-level", "info"]);
  await Bun.sleep(100);
  expect(loud.stderr()).toContain("proxy ready");
});

test("a --config shared with the control plane: the sidecar starts, and says once which documents it skipped", async () => {
  const path = join(fx.tmp.path, "shared.yaml");
  writeFileSync(path, [
    "apiVersion: mesh.dev/v1alpha1\nkind: ControlPlaneConfig\nmetadata: {name: cp}\nspec:\n  certTtl: 1h\n",
    "apiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: orders}\nspec:\n  upstream: http://127.0.0.1:8080\n",
  ].join("---\n"));
  const sidecar = await startMesh(["proxy", "--service", "orders", "--certs-dir", certs, "--config", path, "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
  await Bun.sleep(100);
  const notes = sidecar.stderr().split("\n").filter((l) => l.includes("mesh proxy does not read"));
  expect(notes).toHaveLength(1);
  expect(JSON.parse(notes[0]!).documents).toEqual([`${path}#0 ControlPlaneConfig`]);
});

test.each([
  ["db", "expected SERVICE:PORT=[ADDRESS:]LOCAL_PORT"],
  ["db:5432", "expected SERVICE:PORT=[ADDRESS:]LOCAL_PORT"],
  ["db:70000=15432", "expected SERVICE:PORT=[ADDRESS:]LOCAL_PORT"],
  ["db:5432=host:port", "expected ADDRESS:PORT"],
])("--tcp-upstream %s is refused with exit 64, naming the flag", async (value, message) => {
  const r = await proxy("--upstream", "http://127.0.0.1:8080", "--tcp-upstream", value);
  expect(r.code).toBe(64);
  expect(r.err).toContain("--tcp-upstream");
  expect(r.err).toContain(message);
});

test("a TCP upstream on another listener's port is refused before anything binds", async () => {
  const r = await proxy("--upstream", "http://127.0.0.1:8080", "--admin", "127.0.0.1:15999", "--tcp-upstream", "db:5432=127.0.0.1:15999");
  expect(r.code).toBe(64);
  expect(r.err).toContain("--tcp-upstream");
  expect(r.err).toContain("would share port 15999");
});

test.each(["0.0.0.0:15000", "10.1.2.3:15000", "[::]:15000", "example.com:15000"])("--admin %s (off loopback) is refused with exit 64, naming the flag and --status", async (value) => {
  const r = await proxy("--upstream", "http://127.0.0.1:8080", "--admin", value);
  expect(r.code).toBe(64);
  expect(r.err).toContain("--admin");
  expect(r.err).toContain("is not a loopback address");
  expect(r.err).toContain("--status");
});

test.each(["eu west", "a_", "a".repeat(64)])("--zone %s is refused with exit 64, naming the flag", async (zone) => {
  const r = await proxy("--upstream", "http://127.0.0.1:8080", "--zone", zone);
  expect(r.code).toBe(64);
  expect(r.err).toContain("--zone");
  expect(r.err).toContain("expected a zone name");
});

test("--unknown-destinations takes refuse or passthrough, and passthrough only with --transparent", async () => {
  const bad = await proxy("--upstream", "http://127.0.0.1:8080", "--unknown-destinations", "allow");
  expect([bad.code, bad.err.split("\n")[0]]).toEqual([64, 'error: --unknown-destinations: expected refuse or passthrough, got "allow"']);
  const alone = await proxy("--upstream", "http://127.0.0.1:8080", "--unknown-destinations", "passthrough");
  expect(alone.code).toBe(64);
  expect(alone.err).toContain("--unknown-destinations: passthrough needs --transparent");
  const path = join(fx.tmp.path, "passthrough.yaml");
  writeFileSync(path, "apiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: orders}\nspec:\n  upstream: http://127.0.0.1:8080\n  unknownDestinations: passthrough\n");
  const inFile = await proxy("--config", path);
  expect(inFile.code).toBe(64);
  expect(inFile.err).toContain("--config: passthrough needs --transparent (or ProxyConfig transparent: true)");
});
