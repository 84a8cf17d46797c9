/**
 * A root rotation in a running mesh, with no sidecar restarted:
 * `mesh ca rotate --root` on the control plane's CA directory reaches every sidecar as a
 * trust bundle with the old and the new root, while the control plane still signs under the
 * old one; restarted, it signs and serves under the new root, which sidecars trust already,
 * and leaves move to it as they renew; then `--complete` withdraws the old root. A
 * certificate under the old root is refused from then on.
 */
import { expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { controlPlaneFixtureWith, eventually, serviceManifest, startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { connectWithCerts, httpRequest } from "../helpers/raw-peer-http.ts";

// Leaves renew every few seconds: before --complete every one must have renewed under the new root.
const CP_ARGS = ["--cert-ttl", "8s"];
const fx = controlPlaneFixtureWith("mesh-root-rotation-", CP_ARGS, serviceManifest("orders"), serviceManifest("payments"));
const tmp = fx.tmp;
const certsDir = (name: string) => join(tmp.path, "certs", name);

async function callStatus(outbound: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${outbound}/`, { headers: { host: "payments" } }).catch(() => undefined);
  await res?.arrayBuffer();
  return res?.status ?? 0;
}

const rootsIn = (path: string) => readFileSync(path, "utf8").split("BEGIN CERTIFICATE").length - 1;
const bundleRoots = (instance: string) => rootsIn(join(certsDir(instance), "bundle.pem"));

/** Whether the certificate in `dir` chains (through its intermediate) to the CA's root now. */
function chainsToCurrentRoot(dir: string): boolean {
  const intermediate = new X509Certificate(readFileSync(join(dir, "chain.pem"), "utf8").split(/(?<=-----END CERTIFICATE-----\n)/)[1]!);
  return intermediate.verify(new X509Certificate(readFileSync(join(fx.cp.caDir, "root.pem"))).publicKey);
}

/** What a raw mTLS client with the certificate in `dir` is answered by an inbound listener: the status line, or "" if refused. */
async function inboundAnswer(port: number, dir: string): Promise<string> {
  const link = await connectWithCerts(port, dir);
  await httpRequest(link, { path: "/", host: "payments", headers: { connection: "close" } });
  link.terminate();
  return link.text.split("\r\n")[0]!;
}

const check = (cp: TestControlPlane) => mesh("check", ...cp.adminFlags);
/** `mesh ca rotate --complete`, asking `cp` first. */
const complete = (cp: TestControlPlane, ...extra: string[]) => mesh("ca", "rotate", "--ca-dir", cp.caDir, "--complete", ...cp.adminFlags, ...extra);

async function restartControlPlane(): Promise<void> {
  const ports = fx.cp.ports;
  fx.cp.proc.kill("SIGTERM");
  await fx.cp.proc.exited;
  fx.cp = await startControlPlane(tmp.path, CP_ARGS, "cp", ports);
}

test("root rotation through a running control plane: the new root is trusted before it signs, the old one withdrawn after", async () => {
  const payments = await fx.sidecar("payments", "1");
  const orders = await fx.sidecar("orders", "1");
  expect(await eventually(async () => (await callStatus(orders.ports.outbound)) === 200, 15_000)).toBe(true);
  expect([bundleRoots("payments-1"), bundleRoots("orders-1")]).toEqual([1, 1]);

  // A leaf under the old root that outlives the test, as a forgotten workload (or a stolen key) would hold.
  const oldLeaf = join(tmp.path, "old-leaf");
  expect((await mesh("ca", "issue", "--service", "orders", "--ca-dir", fx.cp.caDir, "--out", oldLeaf, "--ttl", "1h")).code).toBe(0);
  // A sidecar that will not renew during the test (its certificate is an hour long): --complete must wait for it.
  expect((await mesh("ca", "issue", "--service", "orders", "--ca-dir", fx.cp.caDir, "--out", certsDir("orders-3"), "--ttl", "1h")).code).toBe(0);
  const slow = await fx.sidecar("orders", "3");

  // 1. A new root beside the old: the running control plane sends the bundle on; sidecars take it without a renewal.
  expect((await mesh("ca", "rotate", "--ca-dir", fx.cp.caDir, "--root")).code).toBe(0);
  expect(await eventually(() => bundleRoots("payments-1") === 2 && bundleRoots("orders-1") === 2, 15_000, 100)).toBe(true);
  // /config_dump says which roots are in force, by trust domain.
  const dumped = ((await (await fetch(`http://127.0.0.1:${payments.ports.admin}/config_dump`)).json()) as { trustedRoots: { trustDomain: string; sha256: string }[] }).trustedRoots;
  expect(dumped.map((r) => r.trustDomain)).toEqual(["mesh.local", "mesh.local"]);
  expect(new Set(dumped.map((r) => r.sha256)).size).toBe(2);
  const status = (await (await fx.cp.admin("GET", "/v1/status")).json()) as { ca: { bundleRoots: number } };
  expect(status.ca.bundleRoots).toBe(2);
  // The running replica still signs under the old root, renewals included; mesh check says the restart comes next.
  expect(chainsToCurrentRoot(certsDir("payments-1"))).toBe(false);
  expect((await check(fx.cp)).out).toContain("FAIL  the CA directory's root was replaced ('mesh ca rotate --root') since this replica started");
  // --complete now would drop the root every leaf chains to: refused, nothing written.
  const early = await complete(fx.cp);
  expect({ code: early.code, bundleRoots: rootsIn(fx.cp.bundle) }).toEqual({ code: 1, bundleRoots: 2 });
  expect(early.err).toContain("still signs under the old root");

  // 2. Restarted, the control plane signs and serves under the new root: the sidecars trust it already, and their
  // leaves move to it as they renew; one that joins now starts under it.
  await restartControlPlane();
  const late = await fx.sidecar("orders", "2");
  expect(chainsToCurrentRoot(certsDir("orders-2"))).toBe(true);
  expect(await eventually(async () => (await callStatus(late.ports.outbound)) === 200, 20_000, 100)).toBe(true);
  expect(await callStatus(orders.ports.outbound)).toBe(200);
  const renewed = () => ["payments-1", "orders-1"].every((d) => chainsToCurrentRoot(certsDir(d)));
  expect(await eventually(renewed, 15_000, 100)).toBe(true);
  // The sidecar on its hour-long leaf has not: --complete names it and writes nothing, until it is gone.
  // (The others' records show their renewals at their next heartbeats.)
  let waiting = { code: 0, out: "", err: "" };
  expect(await eventually(async () => (waiting = await complete(fx.cp)).err.includes("- 1 sidecar holds"), 10_000, 250)).toBe(true);
  expect({ code: waiting.code, bundleRoots: rootsIn(fx.cp.bundle) }).toEqual({ code: 1, bundleRoots: 2 });
  expect(waiting.err).toMatch(new RegExp(`1 sidecar holds a certificate that does not chain to the current root.*default/orders at 127\\.0\\.0\\.1:${slow.ports.inbound} `, "s"));
  // mesh check reads the sidecars as --complete does, and names the same one.
  expect((await check(fx.cp)).out).toMatch(new RegExp(`FAIL  root rotation under way: 1 sidecar holds a certificate that does not chain to the current root.*default/orders at 127\\.0\\.0\\.1:${slow.ports.inbound} `));
  slow.proc.kill("SIGTERM");
  await slow.proc.exited;
  // mesh check says when --complete may follow: every registered sidecar holds a leaf under the new root.
  const mayComplete = async () => (await check(fx.cp)).out.includes("'mesh ca rotate --complete' may follow");
  expect(await eventually(mayComplete, 15_000, 200)).toBe(true);
  expect((await inboundAnswer(payments.ports.inbound, certsDir("orders-2"))).startsWith("HTTP/1.1 200")).toBe(true);
  expect((await inboundAnswer(payments.ports.inbound, oldLeaf)).startsWith("HTTP/1.1 200")).toBe(true);

  // 3. Every leaf under the new root: the old root withdrawn, every sidecar trusts only the new one.
  // Each sidecar's record shows a renewal at its next heartbeat.
  expect(await eventually(async () => (await complete(fx.cp)).code === 0, 10_000, 250)).toBe(true);
  const moved = () => ["payments-1", "orders-1", "orders-2"].every((d) => bundleRoots(d) === 1 && chainsToCurrentRoot(certsDir(d)));
  expect(await eventually(moved, 20_000, 100)).toBe(true);
  expect(await eventually(async () => (await callStatus(orders.ports.outbound)) === 200, 10_000, 100)).toBe(true);
  expect(await eventually(async () => (await callStatus(late.ports.outbound)) === 200, 10_000, 100)).toBe(true);
  // A certificate under the old root is refused now; one under the new root is not.
  expect(await inboundAnswer(payments.ports.inbound, oldLeaf)).toBe("");
  expect((await inboundAnswer(payments.ports.inbound, certsDir("orders-1"))).startsWith("HTTP/1.1 200")).toBe(true);
}, 120_000);

test("a bundle the control plane cannot use is not taken, and the last good one keeps being served: unreadable, or without the root it signs under", async () => {
  const dir = join(tmp.path, "second");
  mkdirSync(dir);
  const other = await startControlPlane(dir, [], "other");
  const roots = async () => ((await (await other.admin("GET", "/v1/status")).json()) as { ca: { bundleRoots: number } }).ca.bundleRoots;
  const good = readFileSync(other.bundle, "utf8");
  writeFileSync(other.bundle, "not a certificate\n");
  expect(await eventually(() => other.stderr().includes("trust bundle not taken"), 10_000, 100)).toBe(true);
  expect(other.stderr()).toContain(other.bundle);
  expect(await roots()).toBe(1);
  writeFileSync(other.bundle, good);

  // --complete before the replica was restarted onto the new root would leave it signing under a root no one trusts.
  expect((await mesh("ca", "rotate", "--ca-dir", other.caDir, "--root")).code).toBe(0);
  expect(await eventually(async () => (await roots()) === 2, 10_000, 100)).toBe(true);
  const refused = await complete(other);
  expect({ code: refused.code, bundleRoots: rootsIn(other.bundle) }).toEqual({ code: 1, bundleRoots: 2 });
  expect(refused.err).toContain("still signs under the old root");
  // Forced, as an operator might: the running replica refuses the bundle itself.
  expect((await complete(other, "--force")).code).toBe(0);
  expect(await eventually(() => other.stderr().includes("no longer holds the root this control plane signs under"), 10_000, 100)).toBe(true);
  expect(await roots()).toBe(2);
  // mesh check says so, and what comes first.
  const out = (await check(other)).out;
  expect(out).toContain("FAIL  the CA directory's bundle.pem is not the one sent to sidecars:");
  expect(out).toContain("FAIL  the CA directory's root was replaced");
}, 60_000);
