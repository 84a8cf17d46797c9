/**
 * The servers behind the listeners' WebSocket tunnels listen on Unix sockets in a
 * directory only the sidecar's user may enter, not on loopback TCP ports any local
 * process could connect to (and flood). The inbound names each tunnel in an
 * `x-mesh-tunnel` field it adds to the upgrade; a copy the client sends names no tunnel
 * (refused, never reaching the service), and the service never sees the field. The
 * directory goes with a drained sidecar.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { openTunnelDir } from "../../src/proxy/tunnel-dir.ts";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { clientTls } from "../helpers/data-plane.ts";
import { rawExchange } from "../helpers/raw-http.ts";
import { rawUpgrade } from "../helpers/ws-client.ts";

const fx = fixtureFor("orders", "payments");
const upgrades: Record<string, string | null>[] = [];
let service: ReturnType<typeof Bun.serve>;
let tmp: string;
let outbound: number;
let inboundProxy: Awaited<ReturnType<typeof fx.proxy>>;

beforeAll(async () => {
  service = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req, server) {
      upgrades.push({ tunnel: req.headers.get("x-mesh-tunnel"), tunnelUnderscore: req.headers.get("x_mesh_tunnel"), caller: req.headers.get("x-mesh-client-id") });
      return server.upgrade(req, { data: undefined }) ? undefined : new Response("not a websocket", { status: 400 });
    },
    websocket: { message: (ws, m) => void ws.send(m) },
  });
  // The sidecar's temporary directory is this test's, so its tunnel directory can be found.
  tmp = join(fx.tmp.path, "sidecar-tmp");
  mkdirSync(tmp);
  inboundProxy = await fx.proxy("payments", `http://127.0.0.1:${service.port}`, undefined, [], { env: { ...process.env, TMPDIR: tmp } });
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [inboundProxy.ports.inbound] }));
  outbound = orders.ports.outbound;
});
afterAll(() => service.stop(true));

test("the tunnels' servers are Unix sockets in a directory only the sidecar's user may enter", () => {
  const dirs = readdirSync(tmp).filter((d) => d.startsWith("mesh-tunnels-"));
  expect(dirs.length).toBe(1);
  const dir = join(tmp, dirs[0]!);
  const st = statSync(dir);
  expect((st.mode & 0o777).toString(8)).toBe("700");
  expect(st.uid).toBe(process.getuid!());
  expect(readdirSync(dir).sort()).toEqual(["inbound.sock", "outbound.sock"]);
  for (const sock of readdirSync(dir)) expect(statSync(join(dir, sock)).isSocket()).toBe(true);
});

test("an upgrade reaches the service with the caller's identity and without the tunnel's name", async () => {
  const r = await rawUpgrade(outbound, "/ws", "payments");
  expect(r.status).toBe(101);
  expect(upgrades.at(-1)).toEqual({ tunnel: null, tunnelUnderscore: null, caller: "spiffe://mesh.local/ns/default/sa/orders" });
});

test("a tunnel name the client sends straight to the inbound names no tunnel: refused, or dropped, never reaching the service", async () => {
  const tls = clientTls(fx, "orders");
  const upgrade = (line: string) =>
    `GET /ws HTTP/1.1\r\nHost: payments\r\n${line}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;
  const before = upgrades.length;
  for (const line of ["x-mesh-tunnel: 00000000000000000000000000000000", "X-Mesh-Tunnel: forged"]) {
    const r = await rawExchange(upgrade(line), { port: inboundProxy.ports.inbound, tls, quietMs: 300 });
    expect([line, r.statuses[0]]).toEqual([line, 502]);
    expect(r.text).toContain("x-mesh-error: peer-identity");
  }
  expect(upgrades.length).toBe(before);
  // Another spelling is not the field the server reads, and is removed before the service like every identity header.
  const other = await rawExchange(upgrade("x_mesh_tunnel: forged"), { port: inboundProxy.ports.inbound, tls, quietMs: 300 });
  expect(other.statuses[0]).toBe(101);
  expect(upgrades.at(-1)).toEqual({ tunnel: null, tunnelUnderscore: null, caller: "spiffe://mesh.local/ns/default/sa/orders" });
});

test("the directory goes with the drained sidecar", async () => {
  const dir = join(tmp, readdirSync(tmp).find((d) => d.startsWith("mesh-tunnels-"))!);
  inboundProxy.proc.kill("SIGTERM");
  await inboundProxy.proc.exited;
  expect(existsSync(dir)).toBe(false);
});

test("a TMPDIR too long for a socket's path gives way to /tmp; the directory is made 0700 and removed whole", () => {
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = join(tmp, "x".repeat(100));
  try {
    const dir = openTunnelDir();
    expect(dir.outboundPath.startsWith("/tmp/mesh-tunnels-")).toBe(true);
    expect(Buffer.byteLength(dir.outboundPath)).toBeLessThanOrEqual(107);
    const parent = dirname(dir.outboundPath);
    expect((statSync(parent).mode & 0o777).toString(8)).toBe("700");
    dir.remove();
    expect(existsSync(parent)).toBe(false);
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
});

test("a directory left by a sidecar that is gone (killed, crashed) is removed by the next to start; a live one's is kept", () => {
  const base = join(tmp, "leftovers");
  mkdirSync(base);
  const dead = Bun.spawnSync(["true"]).pid; // exited: its pid names no process now
  mkdirSync(join(base, `mesh-tunnels-${dead}-AbCdEf`));
  mkdirSync(join(base, "mesh-tunnels-1-AbCdEf")); // pid 1 lives
  mkdirSync(join(base, "unrelated"));
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = base;
  try {
    const dir = openTunnelDir();
    expect(readdirSync(base).sort()).toEqual(["mesh-tunnels-1-AbCdEf", basename(dirname(dir.inboundPath)), "unrelated"].sort());
    expect(basename(dirname(dir.inboundPath)).startsWith(`mesh-tunnels-${process.pid}-`)).toBe(true);
    dir.remove();
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
});
