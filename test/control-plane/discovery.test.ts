/**
 * The control plane with real processes: sidecars bootstrap from join tokens, register,
 * discover each other and call over mTLS; a new instance receives traffic; a killed one
 * leaves discovery when its lease lapses. Tokens have their uses (one by default) and can be
 * revoked; admin needs a credential.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { mesh, tempDir } from "../helpers/cli.ts";
import { cpSidecar, eventually, serviceManifest, startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { echoService, type EchoService } from "../helpers/mesh-fixture.ts";
import { startMesh, stopAll } from "../helpers/procs.ts";
import { endpointsSeenBy, steadyTraffic } from "../helpers/traffic.ts";

const tmp = tempDir("mesh-cp-");
const echoes: EchoService[] = [];
let cp: TestControlPlane;

beforeAll(async () => {
  cp = await startControlPlane(tmp.path);
  await cp.apply(serviceManifest("orders"), serviceManifest("payments"));
});
afterAll(async () => {
  await stopAll();
  for (const e of echoes) e.server.stop(true);
  tmp.cleanup();
});

async function sidecar(service: string, instance: string) {
  const echo = echoService(`${service}-${instance}`);
  echoes.push(echo);
  return { ...(await cpSidecar(cp, tmp.path, service, instance, echo.url)), echo };
}

async function callPayments(outbound: number): Promise<{ status: number; caller?: string; service?: string }> {
  const res = await fetch(`http://127.0.0.1:${outbound}/pay`, { headers: { host: "payments" } });
  const body = res.status === 200 ? ((await res.json()) as { caller: string; service: string }) : (await res.text(), undefined);
  return { status: res.status, caller: body?.caller, service: body?.service };
}

test("sidecars bootstrap, discover each other and call; instances come and go with their leases", async () => {
  const [p1, orders] = await Promise.all([sidecar("payments", "1"), sidecar("orders", "1")]);
  expect(await eventually(async () => (await endpointsSeenBy(orders.ports.admin, "payments")).length === 1)).toBe(true);
  const first = await callPayments(orders.ports.outbound);
  expect(first).toEqual({ status: 200, caller: "spiffe://mesh.local/ns/default/sa/orders", service: "payments-1" });

  // A third process appears and takes a share of the traffic.
  const p2 = await sidecar("payments", "2");
  expect(await eventually(async () => (await endpointsSeenBy(orders.ports.admin, "payments")).length === 2)).toBe(true);
  for (let i = 0; i < 40; i++) expect((await callPayments(orders.ports.outbound)).status).toBe(200);
  expect(p1.echo.hits).toBeGreaterThan(5);
  expect(p2.echo.hits).toBeGreaterThan(5);

  // Killed without a chance to deregister: it leaves discovery when its lease lapses.
  p1.proc.kill("SIGKILL");
  await p1.proc.exited;
  expect(await eventually(async () => (await endpointsSeenBy(orders.ports.admin, "payments")).length === 1, 8000)).toBe(true);
  expect(await endpointsSeenBy(orders.ports.admin, "payments")).toEqual([`127.0.0.1:${p2.ports.inbound}`]);
  const endpoints = (await (await cp.admin("GET", "/v1/endpoints")).json()) as { items: { service: string }[] };
  expect(endpoints.items.filter((e) => e.service === "payments")).toHaveLength(1);
  for (let i = 0; i < 10; i++) expect(await callPayments(orders.ports.outbound)).toMatchObject({ status: 200, service: "payments-2" });

  // Each proxy acknowledged the latest version.
  expect(
    await eventually(async () => {
      const { items } = (await (await cp.admin("GET", "/v1/proxies")).json()) as { items: { service: string; acked?: string; latest: string }[] };
      return items.length === 2 && items.every((p) => p.acked === p.latest);
    }),
  ).toBe(true);

  // SIGTERM deregisters at once, before the lease would lapse.
  p2.proc.kill("SIGTERM");
  expect(await p2.proc.exited).toBe(0);
  const gone = await cp.admin("GET", "/v1/endpoints");
  expect(((await gone.json()) as { items: { service: string }[] }).items.filter((e) => e.service === "payments")).toHaveLength(0);
});

test("mesh run starts the service only once the control plane's config is in: its first call finds its destination", async () => {
  const payments = await sidecar("payments", "first-call");
  // Three runs at once, each with its own token and certificates.
  const runs = await Promise.all([0, 1, 2].map(async (i) => {
    const run = Bun.spawn([process.execPath, join(import.meta.dir, "../../src/main.ts"), "run", "--service", "orders", "--upstream", "http://127.0.0.1:1",
      "--certs-dir", join(tmp.path, "certs", `orders-run-${i}`), "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
      // curl starts in milliseconds: a sidecar that let it start before its first config would fail it.
      ...(await cp.proxyFlags("orders", tmp.path)), "--", "curl", "-sS", "--fail-with-body", "http://payments/first"],
      { stdout: "pipe", stderr: "pipe" });
    const [code, out, err] = await Promise.all([run.exited, new Response(run.stdout).text(), new Response(run.stderr).text()]);
    return { code, out, err };
  }));
  for (const { code, out, err } of runs) {
    if (code !== 0) console.error(out, err);
    expect(code).toBe(0);
    expect(out).toContain('"service":"payments-first-call"');
  }
  payments.proc.kill("SIGTERM");
  expect(await payments.proc.exited).toBe(0);
});

test("ProxyConfig.controlPlane: a sidecar configured by its file alone bootstraps, registers and follows", async () => {
  const payments = await sidecar("payments", "for-file");
  const tokenFile = join(tmp.path, "orders-file.token");
  writeFileSync(tokenFile, await cp.joinToken("orders"));
  const file = join(tmp.path, "orders-proxy.yaml");
  writeFileSync(file, [
    "apiVersion: mesh.dev/v1alpha1",
    "kind: ProxyConfig",
    "metadata: {name: orders}",
    "spec:",
    "  upstream: http://127.0.0.1:1",
    `  certs: {dir: ${join(tmp.path, "certs", "orders-file")}}`,
    "  healthPath: /healthz",
    "  controlPlane:",
    `    urls: [https://127.0.0.1:${cp.ports.api}]`,
    `    bootstrapUrl: https://127.0.0.1:${cp.ports.bootstrap}`,
    `    joinTokenFile: ${tokenFile}`,
    `    trustBundle: ${cp.bundle}`,
    "    calls: [payments]",
  ].join("\n"));
  const orders = await startMesh(["proxy", "--config", file, "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
  const admin = (orders.ready as { admin: number }).admin;
  expect(orders.ready).toMatchObject({ identity: "spiffe://mesh.local/ns/default/sa/orders" });
  expect(await eventually(async () => (await fetch(`http://127.0.0.1:${admin}/ready`)).status === 200)).toBe(true);
  expect(await endpointsSeenBy(admin, "payments")).toEqual([`127.0.0.1:${payments.ports.inbound}`]);
  // Ready once its config is applied; the acknowledgement that lists it follows.
  const listed = async () => {
    const { items } = (await (await cp.admin("GET", "/v1/proxies")).json()) as { items: { service: string; calls?: string[] }[] };
    return items.filter((p) => p.service === "orders" && p.calls?.join() === "payments").length === 1;
  };
  expect(await eventually(listed)).toBe(true);
  orders.proc.kill("SIGTERM");
  expect(await orders.proc.exited).toBe(0);

  // --ca on the command line is the control plane's trust bundle: the file's certs.dir still holds the certificate.
  const second = join(tmp.path, "orders-proxy-2.yaml");
  writeFileSync(tokenFile, await cp.joinToken("orders"));
  writeFileSync(second, readFileSync(file, "utf8").replace("orders-file", "orders-file-2").replace(/\n    trustBundle: .*/, ""));
  const again = await startMesh(["proxy", "--config", second, "--ca", cp.bundle, "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
  expect(existsSync(join(tmp.path, "certs", "orders-file-2", "chain.pem"))).toBe(true);
  again.proc.kill("SIGTERM");
  expect(await again.proc.exited).toBe(0);
  payments.proc.kill("SIGTERM");
  expect(await payments.proc.exited).toBe(0);
});

test("a join token works once: replayed, it gets nothing", async () => {
  const flags = await cp.proxyFlags("payments", tmp.path);
  const once = await startMesh(["proxy", "--service", "payments", "--upstream", "http://127.0.0.1:1", "--certs-dir", join(tmp.path, "certs", "replay-1"),
    "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", ...flags]);
  expect(once.ready).toMatchObject({ ready: true, identity: "spiffe://mesh.local/ns/default/sa/payments" });
  const again = Bun.spawn([process.execPath, join(import.meta.dir, "../../src/main.ts"), "proxy", "--service", "payments", "--upstream", "http://127.0.0.1:1",
    "--certs-dir", join(tmp.path, "certs", "replay-2"), "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", ...flags], { stderr: "pipe", stdout: "pipe" });
  expect(await again.exited).not.toBe(0);
  expect(await new Response(again.stderr).text()).toContain("token was already used");
  once.proc.kill("SIGTERM");
  expect(await once.proc.exited).toBe(0);
});

test("a token of two uses starts two replicas, the third is refused; list shows it; a revoked token is refused", async () => {
  const admin = ["--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", join(tmp.path, "cp-data", "admin-token")];
  const made = await mesh("join-token", "--service", "payments", "--uses", "2", "--ttl", "720h", ...admin);
  expect(made.code).toBe(0);
  const id = /join token ([0-9a-f-]{36}) for spiffe:\/\/mesh.local\/ns\/default\/sa\/payments: 2 uses, expires /.exec(made.err)?.[1];
  expect(id).toBeDefined();
  const tokenFile = join(tmp.path, "payments-shared.token");
  writeFileSync(tokenFile, made.out);
  const replicaArgs = (n: number) => ["proxy", "--service", "payments", "--upstream", "http://127.0.0.1:1",
    "--certs-dir", join(tmp.path, "certs", `shared-${n}`), "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
    "--control-plane", `https://127.0.0.1:${cp.ports.api}`, "--bootstrap-url", `https://127.0.0.1:${cp.ports.bootstrap}`, "--join-token-file", tokenFile, "--ca", cp.bundle];
  const refused = async (n: number) => {
    const p = Bun.spawn([process.execPath, join(import.meta.dir, "../../src/main.ts"), ...replicaArgs(n)], { stderr: "pipe", stdout: "pipe" });
    expect(await p.exited).not.toBe(0);
    return new Response(p.stderr).text();
  };
  const replicas = await Promise.all([startMesh(replicaArgs(1)), startMesh(replicaArgs(2))]);
  for (const r of replicas) expect(r.ready).toMatchObject({ ready: true, identity: "spiffe://mesh.local/ns/default/sa/payments" });
  expect(await refused(3)).toContain("token was used 2 times, its limit");
  const listed = await mesh("join-token", "list", ...admin);
  expect(listed.out).toContain(`${id}  spiffe://mesh.local/ns/default/sa/payments  0 of 2 uses left  expires `);
  expect(listed.out).not.toContain(made.out.trim());
  // A shared token used up is what mesh check warns of; revoked, it is gone from the check.
  const spent = await mesh("check", ...admin);
  expect(spent.out).toContain(`FAIL  join token ${id} (spiffe://mesh.local/ns/default/sa/payments) has 0 of 2 uses left\n      fix: make a new one`);
  expect((await mesh("join-token", "revoke", id!, ...admin)).code).toBe(0);
  expect((await mesh("check", ...admin)).out).not.toContain(id!);
  for (const r of replicas) r.proc.kill("SIGTERM");
  for (const r of replicas) expect(await r.proc.exited).toBe(0);

  const revoked = await mesh("join-token", "--service", "payments", "--uses", "5", ...admin);
  const revokedId = /join token ([0-9a-f-]{36})/.exec(revoked.err)![1]!;
  expect((await mesh("join-token", "revoke", revokedId, ...admin)).out).toBe(`join token ${revokedId} revoked`);
  writeFileSync(tokenFile, revoked.out);
  expect(await refused(4)).toContain("token was revoked, or this control plane never issued it");
  const again = await mesh("join-token", "revoke", revokedId, ...admin);
  expect([again.code, again.err]).toEqual([65, `error: ${revokedId}: no join token ${revokedId} (expired, revoked, or never issued)`]);
  const bad = await mesh("join-token", "revoke", "../manifests/x", ...admin);
  expect(bad.err).toContain("is not a token id");
  const long = await mesh("join-token", "--service", "payments", "--ttl", "48h", ...admin);
  expect([long.code, long.err.split("\n")[0]]).toEqual([64, 'error: --ttl: expected a lifetime above 0 and at most 24h (720h with --uses above 1), got "48h"']);
  // A shared token with time and uses left passes; one that ends within a week fails.
  const fresh = /join token ([0-9a-f-]{36})/.exec((await mesh("join-token", "--service", "payments", "--uses", "10", "--ttl", "720h", ...admin)).err)![1]!;
  const ending = /join token ([0-9a-f-]{36})/.exec((await mesh("join-token", "--service", "payments", "--uses", "10", "--ttl", "100h", ...admin)).err)![1]!;
  const checked = (await mesh("check", ...admin)).out;
  expect(checked).toMatch(new RegExp(`PASS  join token ${fresh} \\(spiffe://mesh.local/ns/default/sa/payments\\) valid for (29|30) days, 10 of 10 uses left`));
  expect(checked).toMatch(new RegExp(`FAIL  join token ${ending} \\(spiffe://mesh.local/ns/default/sa/payments\\) expires in 4 days`));
  for (const t of [fresh, ending]) expect((await mesh("join-token", "revoke", t, ...admin)).code).toBe(0);
});

test("a token for one service cannot get another's certificate", async () => {
  const tokenFile = join(tmp.path, "orders-for-payments.token");
  writeFileSync(tokenFile, await cp.joinToken("orders"));
  const p = Bun.spawn([process.execPath, join(import.meta.dir, "../../src/main.ts"), "proxy", "--service", "payments", "--upstream", "http://127.0.0.1:1",
    "--certs-dir", join(tmp.path, "certs", "wrong"), "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
    "--control-plane", `https://127.0.0.1:${cp.ports.api}`, "--bootstrap-url", `https://127.0.0.1:${cp.ports.bootstrap}`, "--join-token-file", tokenFile, "--ca", cp.bundle], { stderr: "pipe", stdout: "pipe" });
  expect(await p.exited).not.toBe(0);
  expect(await new Response(p.stderr).text()).toContain("is not the granted service");
});

test("the admin API needs a credential: none gets 401, a wrong one 401, a workload certificate 403", async () => {
  expect((await cp.admin("GET", "/v1/manifests", undefined, "")).status).toBe(401);
  expect((await cp.admin("PUT", "/v1/manifests", { documents: [] }, "x".repeat(43))).status).toBe(401);
  expect((await cp.admin("GET", "/live", undefined, "")).status).toBe(200);
  const certs = join(tmp.path, "certs", "orders-1");
  const res = await fetch(`https://127.0.0.1:${cp.ports.api}/admin/v1/manifests`, {
    tls: { cert: Bun.file(join(certs, "chain.pem")), key: Bun.file(join(certs, "key.pem")), ca: Bun.file(cp.bundle), checkServerIdentity: () => undefined },
  });
  expect(res.status).toBe(403);
  expect(await res.text()).toContain("is not an admin identity");
});

// Down for 10 s: longer than everything the outage must outlast. The leases (--lease-ttl 2s,
// startControlPlane's) would have lapsed several times over, so registrations survive only
// because the store renews leases when it opens. The sidecars' reconnect backoff
// (src/proxy/control/backoff.ts: full jitter over a cap doubling from 250 ms to 5 s) has
// reached its cap: the delays before it sum to at most 0.25 + 0.5 + 1 + 2 + 4 = 7.75 s, and
// 10 s is also above the lease TTL plus one capped delay (2 + 5 = 7 s). Whatever a sidecar
// is sleeping when the control plane returns ends within 5 s, well inside each wait below.
test("the control plane down for 10 s, past its lease TTL and the sidecars' reconnect backoff cap, under steady traffic: no request fails; after it returns, changes flow again", async () => {
  // A sidecar that ran once (its certificate is kept) will restart during the outage; the three start together.
  const [payments, orders, late] = await Promise.all([sidecar("payments", "steady"), sidecar("orders", "steady"), sidecar("orders", "restarted")]);
  expect(await eventually(async () => (await endpointsSeenBy(orders.ports.admin, "payments")).length === 1)).toBe(true);
  late.proc.kill("SIGTERM");
  expect(await late.proc.exited).toBe(0);
  const lateArgs = ["proxy", "--service", "orders", "--upstream", "http://127.0.0.1:1", "--certs-dir", join(tmp.path, "certs", "orders-restarted"),
    "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", ...(await cp.proxyFlags("orders", tmp.path))];
  // A request every 10 ms (it was 20 ms when the outage was 30 s): hundreds of requests meet the outage.
  const traffic = steadyTraffic(orders.ports.outbound, "payments", 10);
  expect(await eventually(() => traffic.succeeded >= 20, 5000)).toBe(true);
  const ports = cp.ports;
  cp.proc.kill("SIGKILL");
  await cp.proc.exited;
  // Started without its control plane: it serves on what it has, but is not ready until it hears from it.
  const restarted = await startMesh(lateArgs);
  const restartedAdmin = (restarted.ready as { admin: number }).admin;
  const waiting = await fetch(`http://127.0.0.1:${restartedAdmin}/ready`);
  expect([waiting.status, await waiting.text()]).toEqual([503, "not ready: waiting for the first config from the control plane\n"]);
  await Bun.sleep(10_000);
  // Back on the same ports and data: registrations and config are still there.
  cp = await startControlPlane(tmp.path, [], "cp", ports);
  expect(await eventually(async () => (await fetch(`http://127.0.0.1:${restartedAdmin}/ready`)).status === 200, 10_000)).toBe(true);
  expect(await endpointsSeenBy(restartedAdmin, "payments")).toHaveLength(1);
  await Bun.sleep(3000);
  const { sent, failures } = await traffic.stop();
  expect(failures).toEqual([]);
  expect(sent).toBeGreaterThan(500);
  expect(payments.echo.hits).toBeGreaterThan(500);
  // The proxies found the control plane again: a new instance is discovered.
  await sidecar("payments", "after");
  expect(await eventually(async () => (await endpointsSeenBy(orders.ports.admin, "payments")).length === 2)).toBe(true);
}, 90_000);

test("mesh check: every line passes on a healthy mesh; a refused config and a bad policies file fail with the fix", async () => {
  // With a sidecar subscribed to a subset of services, compared with the latest of that subset; the two start together.
  const [payments] = await Promise.all([sidecar("payments", "checked"), cpSidecar(cp, tmp.path, "orders", "calls-only", "http://127.0.0.1:1", ["--calls", "payments"])]);
  const tokenFile = join(tmp.path, "admin-check.token");
  writeFileSync(tokenFile, cp.adminToken);
  const admin = ["--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", tokenFile];
  const certsDir = join(tmp.path, "certs", "payments-checked");
  let r = { code: 1, out: "", err: "" };
  const passed = await eventually(async () => (r = await mesh("check", ...admin, "--certs-dir", certsDir)).code === 0, 10_000, 250);
  if (!passed) console.error(r.out, r.err);
  expect(passed).toBe(true);
  expect(r.out).toContain("PASS  control plane reachable");
  expect(r.out).toContain("PASS  certificate spiffe://mesh.local/ns/default/sa/payments valid for");
  expect(r.out).not.toContain("FAIL");

  // A proxy refusing a version: the control plane records the reason and check shows it.
  const registration = { namespace: "default", service: "payments", address: "127.0.0.1", port: payments.ports.inbound, weight: 1 };
  const refuse = () =>
    fetch(`https://127.0.0.1:${cp.ports.api}/v1/config/ack`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ registration, version: "deadbeef00000000", error: "document 0 spec.ports: unknown field" }),
      tls: { cert: Bun.file(join(certsDir, "chain.pem")), key: Bun.file(join(certsDir, "key.pem")), ca: Bun.file(cp.bundle), checkServerIdentity: () => undefined },
    });
  // Told again until shown: on a loaded machine the sidecar's 2 s lease can lapse and its registration (with what
  // was recorded beside it) start afresh between the acknowledgement and the check.
  const shown = await eventually(async () => {
    expect((await refuse()).status).toBe(200);
    return (r = await mesh("check", ...admin)).out.includes("refused config deadbeef00000000");
  }, 10_000, 200);
  expect(shown).toBe(true);
  expect(r.code).toBe(1);
  expect(r.out).toContain("FAIL  proxy default/payments at 127.0.0.1:");
  expect(r.out).toContain("refused config deadbeef00000000: document 0 spec.ports: unknown field");
  expect(r.out).toContain("fix: correct the manifest");

  writeFileSync(join(tmp.path, "cp-policies", "broken.yaml"), "kind: Service\n");
  expect(await eventually(async () => (await mesh("check", ...admin)).out.includes("FAIL  policies in"), 5000)).toBe(true);
});
