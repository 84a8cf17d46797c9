/**
 * `mesh proxy --transparent --unknown-destinations passthrough`, across real network
 * namespaces with the system's iptables: with a whole subnet redirected, what in it is
 * outside the mesh is still reached as if no sidecar were there (HTTP to a host the mesh
 * does not know, a server that speaks first, any other bytes), while a call whose Host
 * names a mesh Service still goes over the mesh, over IPv6 too (the outbound listener
 * takes [::1], where REDIRECT sends that family).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { startReady } from "../helpers/procs.ts";
import { PROXY_GID, redirectLab, type RedirectLab } from "../helpers/redirect-lab.ts";

const HELPERS = join(import.meta.dir, "..", "helpers");

describe("a transparent sidecar passing through what the mesh does not know", () => {
  const fx = fixtureFor("orders", "payments");
  let lab: RedirectLab;
  /** The outside service's ports, on payments' host address (no Service names it). */
  let outside: { port: number; greeterPort: number };
  const inOrders = (...command: string[]) => lab.inNs(lab.orders, ...command);
  const curl = (...args: string[]) => inOrders("curl", "-s", "-m", "5", "--noproxy", "*", ...args);

  beforeAll(async () => {
    lab = await redirectLab(fx, ["--transparent", "--unknown-destinations", "passthrough"]);
    const server = await startReady([process.execPath, join(HELPERS, "outside-server.ts"), lab.payments.address], { wrap: ["ip", "netns", "exec", lab.payments.ns] });
    outside = server.ready as { port: number; greeterPort: number };
    const r = lab.redirect("--proxy-gid", PROXY_GID, "--cidrs", lab.subnet);
    if (r.status !== 0) throw new Error(r.stderr);
  });
  afterAll(() => lab?.destroy());

  test("HTTP to a host the mesh does not know goes where it was sent, untouched", () => {
    const r = curl(`http://${lab.payments.address}:${outside.port}/x`);
    expect(JSON.parse(r.stdout)).toEqual({ outside: true, method: "GET", path: "/x", asked: `${lab.payments.address}:${outside.port}`, caller: null });
  });

  test("a call whose Host names a mesh Service still goes over the mesh, as orders", () => {
    const r = curl("--resolve", `payments:80:${lab.payments.address}`, "http://payments/charge");
    expect(JSON.parse(r.stdout)).toMatchObject({ service: "payments", caller: "spiffe://mesh.local/ns/default/sa/orders" });
  });

  test("a server that speaks first is heard, though the client sends nothing until it does", () => {
    const r = inOrders(process.execPath, join(HELPERS, "greeting-client.ts"), lab.payments.address, String(outside.greeterPort));
    expect(JSON.parse(r.stdout)).toEqual({ greeting: "220 outside\r\n", rest: "QUIT\r\nbye" });
  });

  test("bytes that are not HTTP (a TLS hello's first bytes) go on as they are, half-close and all", () => {
    const r = inOrders(process.execPath, join(HELPERS, "tcp-exchange.ts"), lab.payments.address, String(outside.greeterPort), "\x16\x03\x01hello");
    expect(JSON.parse(r.stdout)).toEqual({ text: "220 outside\r\n\x16\x03\x01hellobye" });
  });

  test("IPv6: a call mesh redirect sends to [::1] reaches the outbound listener there too, and goes over the mesh", () => {
    const prefix = "fd00:6d65:7368::";
    expect(inOrders("ip", "addr", "add", `${prefix}1/64`, "dev", "eth0", "nodad").status).toBe(0);
    const r = lab.redirect("--proxy-gid", PROXY_GID, "--cidrs", `${lab.subnet},${prefix}/64`);
    expect(r.status).toBe(0);
    const call = curl("-g", "--resolve", `payments:80:[${prefix}200]`, "http://payments/charge");
    expect(JSON.parse(call.stdout)).toMatchObject({ service: "payments", caller: "spiffe://mesh.local/ns/default/sa/orders" });
    const dump = JSON.parse(curl("http://127.0.0.1:15000/config_dump").stdout) as { listeners: { outboundTwin?: string } };
    expect(dump.listeners.outboundTwin).toBe("[::1]:15001");
  });

  test("each is counted as a passthrough connection", () => {
    const metrics = curl("http://127.0.0.1:15000/metrics").stdout;
    const ok = metrics.split("\n").find((l) => l.startsWith('mesh_tcp_connections_total{direction="outbound",peer="passthrough",result="ok"}'));
    expect(Number(ok?.split(" ").pop())).toBeGreaterThanOrEqual(3);
  });
});
