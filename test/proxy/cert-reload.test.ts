/**
 * A sidecar without a control plane takes its renewed certificate files as they change
 * (real sidecars, certificates from `mesh ca issue`): calls go on without a failure, new
 * connections see the new certificate, and a set that fails the start-up checks is refused
 * with the file named while the last good one serves. SIGHUP reads files a watch cannot see.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import tls from "node:tls";
import { readFileSync } from "node:fs";
import { mesh } from "../helpers/cli.ts";
import { MeshFixture, metricValue } from "../helpers/mesh-fixture.ts";
import { eventually } from "../helpers/wait.ts";
import { steadyTraffic } from "../helpers/traffic.ts";

const fx = new MeshFixture();
let payments: Awaited<ReturnType<typeof fx.proxy>>;
let orders: Awaited<ReturnType<typeof fx.proxy>>;
const paymentsDir = () => join(fx.tmp.path, "certs", "payments");
const ordersDir = () => join(fx.tmp.path, "certs", "orders");

async function issue(service: string, out: string, ttl = "24h"): Promise<void> {
  const r = await mesh("ca", "issue", "--service", service, "--ca-dir", fx.ca, "--out", out, "--force", "--ttl", ttl);
  if (r.code !== 0) throw new Error(r.err);
}

const expiry = (admin: number) => metricValue(admin, "mesh_certificate_expiry_seconds");

/** The notAfter of the certificate a new mTLS connection to `port` is served, as orders. */
function servedNotAfter(port: number): Promise<number> {
  const d = ordersDir();
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ port, host: "127.0.0.1", cert: readFileSync(join(d, "chain.pem")), key: readFileSync(join(d, "key.pem")), ca: readFileSync(join(d, "bundle.pem")), checkServerIdentity: () => undefined }, () => {
      resolve(Date.parse(sock.getPeerCertificate().valid_to));
      sock.destroy();
    });
    sock.on("error", reject);
  });
}

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await issue("payments", paymentsDir(), "2h");
  payments = await fx.proxy("payments", fx.echo("payments").url);
  orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }));
});
afterAll(() => fx.close());

describe("renewed certificate files", () => {
  test("are taken as they change: no call fails, open connections move, new ones see the new certificate", async () => {
    const before = await expiry(payments.ports.admin);
    expect(before * 1000).toBeLessThan(Date.now() + 2.5 * 3600_000);
    const calls = steadyTraffic(orders.ports.outbound, "payments", 10, 5000, 30_000);
    expect(await eventually(() => calls.succeeded >= 20, 10_000)).toBe(true);
    await issue("payments", paymentsDir());
    expect(await eventually(async () => (await expiry(payments.ports.admin)) > before + 3600, 10_000)).toBe(true);
    const after = await expiry(payments.ports.admin);
    const seen = calls.succeeded;
    expect(await eventually(() => calls.succeeded >= seen + 20, 10_000)).toBe(true);
    expect((await calls.stop()).failures).toEqual([]);
    expect(payments.stderr()).toContain("certificate reloaded");
    // orders' session, opened before, was asked to move.
    expect(await metricValue(payments.ports.admin, "mesh_connections_retired_total", { reason: "rotation" })).toBeGreaterThanOrEqual(1);
    expect(Math.floor((await servedNotAfter(payments.ports.inbound)) / 1000)).toBe(after);
  }, 40_000);

  test("a set that fails the checks is refused, naming the file, and the last good certificate serves on", async () => {
    const before = await expiry(payments.ports.admin);
    // Another key: the chain no longer matches it.
    const stray = join(fx.tmp.path, "stray");
    await issue("payments", stray);
    copyFileSync(join(stray, "key.pem"), join(paymentsDir(), "key.pem"));
    const keyFile = join(paymentsDir(), "key.pem");
    expect(await eventually(() => payments.stderr().includes("certificate files not taken") && payments.stderr().includes(keyFile), 10_000)).toBe(true);
    expect(await expiry(payments.ports.admin)).toBe(before);
    const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/still`, { headers: { host: "payments" } });
    expect(res.status).toBe(200);
    // Another identity: orders' own set.
    for (const f of ["chain.pem", "key.pem", "bundle.pem", "cert.pem"]) copyFileSync(join(ordersDir(), f), join(paymentsDir(), f));
    expect(await eventually(() => payments.stderr().includes("the certificate is for spiffe://mesh.local/ns/default/sa/orders, and this sidecar is spiffe://mesh.local/ns/default/sa/payments"), 10_000)).toBe(true);
    expect(await expiry(payments.ports.admin)).toBe(before);
    // A good set again is taken.
    await issue("payments", paymentsDir(), "12h");
    expect(await eventually(async () => (await expiry(payments.ports.admin)) < before - 3600, 10_000)).toBe(true);
    expect((await fetch(`http://127.0.0.1:${orders.ports.outbound}/again`, { headers: { host: "payments" } })).status).toBe(200);
  }, 40_000);

  test("SIGHUP reads files behind symlinks the directory watch does not see", async () => {
    // The flags name symlinks in one directory; the files live in another.
    const links = join(fx.tmp.path, "links");
    const real = join(fx.tmp.path, "real");
    mkdirSync(links);
    await issue("payments", real, "3h");
    for (const f of ["chain.pem", "key.pem", "bundle.pem"]) symlinkSync(join(real, f), join(links, f));
    const hidden = await fx.proxy("payments", fx.echo("payments-2").url, undefined, ["--cert", join(links, "chain.pem"), "--key", join(links, "key.pem"), "--ca", join(links, "bundle.pem")]);
    const before = await expiry(hidden.ports.admin);
    await issue("payments", real, "6h");
    await Bun.sleep(1500);
    expect(await expiry(hidden.ports.admin)).toBe(before);
    hidden.proc.kill("SIGHUP");
    expect(await eventually(async () => (await expiry(hidden.ports.admin)) > before + 3600, 5000)).toBe(true);
    expect(hidden.proc.exitCode).toBeNull();
  }, 30_000);
});
