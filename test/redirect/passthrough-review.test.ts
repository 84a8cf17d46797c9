/**
 * Review of passthrough (tcp/passthrough.ts), as an attacker and a careful operator would
 * try it, across network namespaces with iptables redirecting the hosts' subnet: slow and
 * split heads, big first chunks, HTTP/2 and CONNECT, destinations that refuse or never
 * answer, a drain, the sidecar's own address, the connection limit.
 * Every process is started through the test helpers and stopped by them.
 * (Moved from test/proxy/review-expiry-reload-passthrough.test.ts, the same review's file
 * for credential expiry and certificate and config file reload.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { MeshFixture } from "../helpers/mesh-fixture.ts";
import { startMesh, startReady, type MeshProcess } from "../helpers/procs.ts";
import type { Plan, Result } from "../helpers/scripted-tcp-client.ts";
import { createLab, netnsUnavailable, type Host } from "../helpers/netns.ts";

const HELPERS = join(import.meta.dir, "..", "helpers");

// ---------------------------------------------------------------------------------------
// Passthrough, across network namespaces with iptables redirecting the hosts' subnet
// ---------------------------------------------------------------------------------------

describe("passthrough for addresses no Service has", () => {
  const fx = new MeshFixture();
  const PROXY_GID = "1337";
  const MAIN = join(import.meta.dir, "..", "..", "src", "main.ts");
  let hosts: { orders: Host; payments: Host };
  let destroyLab = () => {};
  let subnet: string;
  let outside: { port: number; echoPort: number };
  let orders: MeshProcess | undefined;
  const inNs = (host: Host, ...command: string[]) => spawnSync("ip", ["netns", "exec", host.ns, ...command], { encoding: "utf8", timeout: 60_000 });

  const clientCommand = (plan: Plan) => ["ip", "netns", "exec", hosts.orders.ns, process.execPath, join(HELPERS, "scripted-tcp-client.ts"), JSON.stringify(plan)];
  /** The scripted client, run on orders' host (its connections are redirected). */
  function run(plan: Plan): Result[] {
    const r = spawnSync(clientCommand(plan)[0]!, clientCommand(plan).slice(1), { encoding: "utf8", timeout: plan.waitMs + 20_000 });
    if (r.status !== 0) throw new Error(`client failed: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { results: Result[] }).results;
  }
  const one = (plan: Plan) => run(plan)[0]!;
  function passthroughCount(): number {
    const text = inNs(hosts.orders, "curl", "-s", "-m", "5", "http://127.0.0.1:15000/metrics").stdout;
    return text
      .split("\n")
      .filter((l) => l.startsWith("mesh_tcp_connections_total{") && l.includes('peer="passthrough"'))
      .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
  }
  function pattern(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let k = 0; k < n; k++) out[k] = k === 0 ? 0x16 : (k * 7 + 3) & 0xff;
    return out;
  }

  /** (Re)starts orders' sidecar, --transparent with passthrough, under the group the rules leave alone. */
  async function startOrders(extra: string[] = []): Promise<MeshProcess> {
    if (orders !== undefined && orders.proc.exitCode === null) {
      orders.proc.kill("SIGKILL");
      await orders.proc.exited;
    }
    const config = join(fx.tmp.path, "services.yaml");
    const listeners = extra.includes("--outbound") ? [] : ["--outbound", "127.0.0.1:15001"];
    orders = await startMesh(
      ["proxy", "--service", "orders", "--upstream", "http://127.0.0.1:9", "--certs-dir", join(fx.tmp.path, "certs", "orders"), "--inbound", "127.0.0.1:15006", "--admin", "127.0.0.1:15000",
        "--config", config, "--transparent", "--unknown-destinations", "passthrough", ...listeners, ...extra],
      { wrap: ["ip", "netns", "exec", hosts.orders.ns, "setpriv", `--regid=${PROXY_GID}`, "--clear-groups"] },
    );
    return orders;
  }

  beforeAll(async () => {
    const why = netnsUnavailable();
    if (why) throw new Error(why);
    await fx.init();
    await fx.issue("orders");
    await fx.issue("payments");
    const lab = createLab(2);
    destroyLab = () => lab.destroy();
    const [o, p] = lab.hosts as [Host, Host];
    hosts = { orders: o, payments: p };
    subnet = `${p.address.replace(/\.\d+$/, ".0")}/24`;
    const vip = p.address.replace(/\.\d+$/, ".200");
    const wrapP = ["ip", "netns", "exec", p.ns];
    const echo = (await startReady([process.execPath, join(HELPERS, "echo-server.ts"), "payments"], { wrap: wrapP })).ready as { port: number };
    outside = (await startReady([process.execPath, join(HELPERS, "outside-server.ts"), p.address], { wrap: wrapP })).ready as { port: number; echoPort: number };
    writeFileSync(
      join(fx.tmp.path, "services.yaml"),
      `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: { name: payments }\nspec:\n  addresses: [${vip}]\n  ports: [{ name: http, port: 80 }]\n  endpoints: [{ address: ${p.address}, port: 15006 }]\n`,
    );
    await startMesh(["proxy", "--service", "payments", "--upstream", `http://127.0.0.1:${echo.port}`, "--certs-dir", join(fx.tmp.path, "certs", "payments"),
      "--inbound", `${p.address}:15006`, "--outbound", "127.0.0.1:15001", "--admin", "127.0.0.1:15000", "--config", join(fx.tmp.path, "services.yaml")], { wrap: wrapP });
    await startOrders();
    const r = inNs(o, process.execPath, MAIN, "redirect", "--proxy-gid", PROXY_GID, "--cidrs", subnet);
    if (r.status !== 0) throw new Error(r.stderr);
  });
  afterAll(async () => {
    await fx.close();
    destroyLab();
  });

  const ORDERS_ID = "spiffe://mesh.local/ns/default/sa/orders";
  const meshCall = (path: string) => [`GET ${path} HTTP/1.1\r\n`, "Host: payments\r\n", "Connection: close\r\n\r\n"];

  test("one byte, then silence past the sniff window, then the rest: a request to a host outside the mesh reaches it whole", () => {
    const r = one({ host: hosts.payments.address, port: outside.port, steps: [{ text: "G" }, { sleepMs: 400, text: "ET /slow HTTP/1.1\r\nHost: outside.example\r\nConnection: close\r\n\r\n" }], waitMs: 5000 });
    expect(r.text).toContain("HTTP/1.1 200");
    expect(JSON.parse(r.text.slice(r.text.indexOf("{")))).toEqual({ outside: true, method: "GET", path: "/slow", asked: "outside.example", caller: null });
  });

  test("an HTTP head to a mesh Service whose lines arrive 200 ms apart is still read as a call, not sent out in the clear", () => {
    const [line, host, end] = meshCall("/trickled");
    const steps = [{ text: line }, { sleepMs: 200, text: host }, { sleepMs: 200, text: end }];
    // Control: the same bytes straight to the outbound listener are a call.
    const direct = one({ host: "127.0.0.1", port: 15001, steps, waitMs: 5000 });
    expect(direct.text).toContain(`"caller":"${ORDERS_ID}"`);
    // Redirected, bound for an address no Service has (nothing listens at its port 80).
    const r = one({ host: hosts.payments.address, port: 80, steps, waitMs: 5000 });
    expect({ error: r.error ?? null, text: r.text }).toEqual({ error: null, text: expect.stringContaining(`"caller":"${ORDERS_ID}"`) as unknown as string });
  });

  test("an HTTP head to a mesh Service in 30 small writes, inside the sniff window, is read as a call", () => {
    const head = meshCall("/split").join("");
    const steps = Array.from({ length: Math.ceil(head.length / 2) }, (_, i) => ({ text: head.slice(i * 2, i * 2 + 2) })).slice(0, 200);
    const r = one({ host: hosts.payments.address, port: 80, steps, waitMs: 5000 });
    expect(r.text).toContain("HTTP/1.1 200");
    expect(r.text).toContain(`"service":"payments"`);
    expect(r.text).toContain(`"caller":"${ORDERS_ID}"`);
  });

  test("a 64 KiB first chunk of binary goes to the destination whole and comes back whole, with its half-close", () => {
    const r = one({ host: hosts.payments.address, port: outside.echoPort, steps: [{ pattern: 65536 }], halfClose: true, waitMs: 10_000 });
    // The echo ends only after the client's FIN: an end (not a timeout) shows the half-close went through, after the bytes.
    expect({ bytes: r.bytes, hash: r.hash, orderly: r.ended === "end" || r.ended === "close" }).toEqual({ bytes: 65536, hash: String(Bun.hash(pattern(65536))), orderly: true });
  });

  test("HTTP/2 with prior knowledge, and a CONNECT to a host outside the mesh, pass through untouched", () => {
    const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\u0000\u0000\u0000\u0004\u0000\u0000\u0000\u0000\u0000";
    const h2 = one({ host: hosts.payments.address, port: outside.echoPort, steps: [{ text: preface }], halfClose: true, waitMs: 5000 });
    expect({ text: h2.text, orderly: h2.ended === "end" || h2.ended === "close" }).toEqual({ text: preface, orderly: true });
    const connect = "CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n";
    const c = one({ host: hosts.payments.address, port: outside.echoPort, steps: [{ text: connect }], halfClose: true, waitMs: 5000 });
    expect({ text: c.text, orderly: c.ended === "end" || c.ended === "close" }).toEqual({ text: connect, orderly: true });
  });

  test("a CONNECT to a mesh Service, whose Host names it, is read as a call as the outbound listener reads it, not sent out in the clear", () => {
    const steps = [{ text: "CONNECT payments:80 HTTP/1.1\r\nHost: payments:80\r\n\r\n" }, { sleepMs: 500, text: meshCall("/tunnelled").join("") }];
    // Control: the outbound listener takes it as an HTTP proxy client sends it.
    const direct = one({ host: "127.0.0.1", port: 15001, steps, waitMs: 5000 });
    expect(direct.text).toContain(`"caller":"${ORDERS_ID}"`);
    const r = one({ host: hosts.payments.address, port: 80, steps, waitMs: 5000 });
    expect({ error: r.error ?? null, text: r.text }).toEqual({ error: null, text: expect.stringContaining(`"caller":"${ORDERS_ID}"`) as unknown as string });
  });

  test("a destination that refuses, and one that never answers the connect: the client is closed, at once or within the connect timeout, never left hanging", () => {
    const spoke = one({ host: hosts.payments.address, port: 1, steps: [{ text: "hello" }], waitMs: 8000 });
    expect({ ended: spoke.ended === "timeout" ? "timeout" : "closed", text: spoke.text, fast: spoke.ms < 3000 }).toEqual({ ended: "closed", text: "", fast: true });
    const waited = one({ host: hosts.payments.address, port: 1, steps: [], waitMs: 8000 });
    expect({ ended: waited.ended === "timeout" ? "timeout" : "closed", fast: waited.ms < 3000 }).toEqual({ ended: "closed", fast: true });
    // No host has this address: the connect gets no answer at all.
    const blackhole = hosts.payments.address.replace(/\.\d+$/, ".99");
    const r = one({ host: blackhole, port: 5432, steps: [{ text: "hello" }], waitMs: 15_000 });
    expect(r.connected).toBe(true);
    expect({ ended: r.ended === "timeout" ? "timeout" : "closed", text: r.text, inTime: r.ms < 12_000 }).toEqual({ ended: "closed", text: "", inTime: true });
  }, 40_000);

  test("the sidecar's own address and outbound port as a destination: no loop, one passthrough connection each, answered promptly", async () => {
    // An outbound listener on every address: the sidecar's own passthrough connection reaches it.
    await startOrders(["--outbound", "0.0.0.0:15001"]);
    const before = passthroughCount();
    const http = one({ host: hosts.orders.address, port: 15001, steps: [{ text: "GET /self HTTP/1.1\r\nHost: nowhere.example\r\nConnection: close\r\n\r\n" }], waitMs: 5000 });
    expect(http.ended).not.toBe("timeout");
    expect(http.text).toContain("HTTP/1.1 404");
    const bytes = one({ host: hosts.orders.address, port: 15001, steps: [{ text: "\u0016\u0003\u0001hello" }], halfClose: true, waitMs: 5000 });
    expect(bytes.ended).not.toBe("timeout");
    await Bun.sleep(500);
    expect(passthroughCount() - before).toBe(2);
    expect(orders!.proc.exitCode).toBeNull();
    // And it serves on.
    const r = one({ host: hosts.payments.address, port: outside.port, steps: [{ text: "GET /after HTTP/1.1\r\nHost: outside.example\r\nConnection: close\r\n\r\n" }], waitMs: 5000 });
    expect(r.text).toContain(`"path":"/after"`);
  }, 40_000);

  test("SIGTERM with passthrough connections open: each is ended in order (FIN), and the sidecar exits 0", async () => {
    const sidecar = await startOrders();
    const plan: Plan = { host: hosts.payments.address, port: outside.echoPort, steps: [{ text: "hello" }], waitMs: 15_000, parallel: 5 };
    const proc = Bun.spawn(clientCommand(plan), { stdout: "pipe", stderr: "pipe" });
    const out = new Response(proc.stdout).text();
    await Bun.sleep(1500);
    sidecar.proc.kill("SIGTERM");
    const exit = await Promise.race([sidecar.proc.exited, Bun.sleep(15_000).then(() => "still running")]);
    const results = (JSON.parse(await out) as { results: Result[] }).results;
    expect(exit).toBe(0);
    expect(results.map((r) => ({ text: r.text, ended: r.ended }))).toEqual(Array.from({ length: 5 }, () => ({ text: "hello", ended: "end" })));
  }, 40_000);

  test("--max-connections 10 and 30 passthrough connections at once: at most 10 carried, the rest reset; once closed, 10 new ones are all carried", async () => {
    await startOrders(["--max-connections", "10"]);
    const first = run({ host: hosts.payments.address, port: outside.echoPort, steps: [{ text: "hi{i}" }], until: "hi", holdMs: 1500, waitMs: 4000, parallel: 30 });
    const carried = first.filter((r) => r.text.startsWith("hi"));
    expect(carried.length).toBeGreaterThanOrEqual(5);
    expect(carried.length).toBeLessThanOrEqual(10);
    for (const r of first.filter((r) => !r.text.startsWith("hi"))) expect(r.ended).not.toBe("timeout");
    await Bun.sleep(1000);
    const second = run({ host: hosts.payments.address, port: outside.echoPort, steps: [{ text: "hi{i}" }], until: "hi", holdMs: 500, waitMs: 4000, parallel: 10 });
    expect(second.filter((r) => r.text.startsWith("hi")).length).toBe(10);
    const refused = inNs(hosts.orders, "curl", "-s", "-m", "5", "http://127.0.0.1:15000/metrics").stdout.split("\n").filter((l) => l.startsWith("mesh_connections_refused_total{"));
    expect(refused.reduce((s, l) => s + Number(l.split(" ").pop()), 0)).toBeGreaterThanOrEqual(20);
  }, 40_000);
});
