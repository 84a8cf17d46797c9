/**
 * `mesh proxy`'s flags are held to the rules of the ProxyConfig fields they stand for, and
 * checked before a certificate is read or a join token spent: a bad one exits 64 naming it.
 */
import { afterAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";

const tmp = tempDir("mesh-proxy-flags-");
afterAll(() => tmp.cleanup());

/** No certificate exists: only a flag's error can come first. */
const proxy = (...flags: string[]) => mesh("proxy", "--service", "orders", "--upstream", "http://127.0.0.1:8080", "--certs-dir", join(tmp.path, "none"), ...flags);
/** ... and the join token file is missing. */
const withControlPlane = (...flags: string[]) => proxy("--control-plane", "https://127.0.0.1:15010", "--join-token-file", "/nonexistent", ...flags);

test.each([
  [["--namespace", "Bad_NS"], '--namespace: namespace "Bad_NS" must be a DNS label'],
  [["--control-plane", "https://127.0.0.1:0"], "--control-plane: expected port 1-65535"],
  [["--control-plane", "https://:secret@127.0.0.1:15010"], "--control-plane: expected only scheme, host and port"],
  [["--control-plane", "10.0.0.1:15010"], "--control-plane:"],
])("%p exits 64 naming the flag", async (flags, message) => {
  const r = await proxy(...flags);
  expect(r.code).toBe(64);
  expect(r.err).toContain(message);
});

test("--upstream with port 0 exits 64: nothing listens there to be called", async () => {
  const r = await mesh("proxy", "--service", "orders", "--upstream", "http://127.0.0.1:0");
  expect(r.code).toBe(64);
  expect(r.err).toContain('--upstream: expected port 1-65535, got "http://127.0.0.1:0"');
});

test.each([
  [["--bootstrap-url", "http://127.0.0.1:15012"], "--bootstrap-url: expected an https:// URL"],
  [["--advertise", "10.0.0.300"], "--advertise: expected an IPv4 or IPv6 address or a hostname"],
  [["--calls", "payments.shop.extra"], '--calls: "payments.shop.extra": expected name or name.namespace'],
  [["--calls", "payments", "--calls", "Orders"], '--calls: service "Orders" must be a DNS label'],
])("with a control plane, %p exits 64 naming the flag, before the join token is read", async (flags, message) => {
  const r = await withControlPlane(...flags);
  expect(r.code).toBe(64);
  expect(r.err).toContain(message);
  expect(r.err).not.toContain("join token not found");
});

test("a control-plane flag's value is checked even when no control plane is named", async () => {
  const r = await proxy("--advertise", "not an ip");
  expect(r.code).toBe(64);
  expect(r.err).toContain("--advertise:");
});

test.each([["--calls", "payments"], ["--join-token-file", "orders.token"], ["--bootstrap-url", "https://127.0.0.1:15012"], ["--advertise", "10.0.0.7"], ["--health-path", "/healthz"]])(
  "%s without a control plane exits 64: it would be ignored, and the sidecar left out of the mesh",
  async (flag, value) => {
    const r = await proxy(flag, value);
    expect(r.code).toBe(64);
    expect(r.err).toContain(`${flag}: has no effect without --control-plane`);
  },
);

test("the file's controlPlane.calls are held to the flag's rule, naming the field", async () => {
  const path = join(tmp.path, "proxy.yaml");
  writeFileSync(path, "apiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: orders}\nspec:\n  upstream: http://127.0.0.1:8080\n  controlPlane:\n    urls: [https://127.0.0.1:15010]\n    calls: [Bad Name]\n");
  const r = await mesh("proxy", "--config", path);
  expect(r.code).toBe(65);
  expect(r.err).toContain(`${path}#0 spec.controlPlane.calls[0]: service "Bad Name" must be a DNS label`);
});
