/**
 * Review (an attacker's and a careful operator's) of a --transparent sidecar's outbound
 * listener, which also takes the other loopback ([::1]): routing there, the twin port
 * taken by another process, one --max-connections budget across both, and a drain.
 * Real `mesh proxy` processes; every one stopped in afterAll.
 * (Moved from test/control-plane/review-serving-renewal.test.ts, whose other reviews are
 * about the control plane.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { Socket } from "bun";
import { MeshFixture, type EchoService } from "../helpers/mesh-fixture.ts";
import { freePort } from "../helpers/ports.ts";
import { startMesh, stopAll, type MeshProcess } from "../helpers/procs.ts";
import { eventually } from "../helpers/wait.ts";
import { records } from "../helpers/log-records.ts";

const fx = new MeshFixture();
const heldSockets: { stop(closeActive?: boolean): void }[] = [];

beforeAll(async () => {
  await fx.init();
  for (const s of ["orders", "payments"]) await fx.issue(s);
});
afterAll(async () => {
  await stopAll();
  for (const s of heldSockets) s.stop(true);
  await fx.close();
});

// ---------------------------------------------------------------------------------------
// Small tools
async function configDump(adminPort: number): Promise<Record<string, unknown> & { version?: string; certificateExpires: string; listeners: Record<string, unknown> }> {
  return (await (await fetch(`http://127.0.0.1:${adminPort}/config_dump`)).json()) as never;
}

// ---------------------------------------------------------------------------------------
// --transparent: the outbound listener on both loopbacks

describe("a --transparent sidecar's outbound listener on both loopbacks", () => {
  let payments: MeshProcess & { ports: { inbound: number; outbound: number; admin: number } };
  let paymentsEcho: EchoService;
  beforeAll(async () => {
    paymentsEcho = fx.echo("payments-twin");
    payments = await fx.proxy("payments", paymentsEcho.url);
  });
  const transparentOrders = async (name: string, outbound: string, extra: string[] = []) => {
    const cfg = fx.config(`orders-${name}`, { payments: [payments.ports.inbound] });
    const certs = join(fx.tmp.path, "certs", "orders");
    const p = await startMesh([
      "proxy", "--service", "orders", "--upstream", fx.echo(`orders-${name}`).url, "--certs-dir", certs, "--config", cfg, "--transparent",
      "--inbound", "127.0.0.1:0", "--outbound", outbound, "--admin", "127.0.0.1:0", ...extra,
    ]);
    return { ...p, ports: p.ready as { inbound: number; outbound: number; admin: number } };
  };
  /** A plain request to [::1]:port naming `host`; the status and body, or the error. */
  const callV6 = async (port: number, host = "payments", path = "/") => {
    try {
      const res = await fetch(`http://[::1]:${port}${path}`, { headers: { host } });
      return { status: res.status, body: await res.text(), error: res.headers.get("x-mesh-error") };
    } catch (err) {
      return { status: 0, body: String(err), error: "connect" };
    }
  };

  test("a plain request to [::1] naming a mesh Service is routed over the mesh; /config_dump lists the twin", async () => {
    const o = await transparentOrders("twin", "127.0.0.1:0");
    const dump = await configDump(o.ports.admin);
    expect(dump.listeners.outboundTwin).toBe(`[::1]:${o.ports.outbound}`);
    const r = await callV6(o.ports.outbound, "payments", "/charge");
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ service: "payments-twin", caller: "spiffe://mesh.local/ns/default/sa/orders", path: "/charge" });
    // An unknown Host is refused there as on 127.0.0.1.
    expect((await callV6(o.ports.outbound, "nowhere")).status).toBe(404);
  }, 30_000);

  test("the twin port already taken by another process: the sidecar starts, says why, and does not list the twin", async () => {
    const port = freePort();
    let squatter: { stop(closeActive?: boolean): void; port: number };
    try {
      squatter = Bun.listen({ hostname: "::1", port, socket: { data() {} } });
    } catch (err) {
      throw new Error(`cannot take [::1]:${port} for the test: ${(err as Error).message}`);
    }
    heldSockets.push(squatter);
    const o = await transparentOrders("squatted", `127.0.0.1:${port}`);
    expect(o.ports.outbound).toBe(port);
    const warning = records(o).find((r) => r.msg.includes("cannot take the other family's redirected connections"));
    expect(warning).toMatchObject({ address: "::1", port });
    expect(String(warning?.reason ?? "")).not.toBe("");
    const dump = await configDump(o.ports.admin);
    expect(dump.listeners.outboundTwin).toBeUndefined();
    // The IPv4 side works; the squatter keeps its port.
    const res = await fetch(`http://127.0.0.1:${port}/`, { headers: { host: "payments" } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    squatter.stop(true);
  }, 30_000);

  test("--max-connections is one budget across both loopbacks", async () => {
    const o = await transparentOrders("limit", "127.0.0.1:0", ["--max-connections", "3"]);
    // The sidecar's own outbound pool to payments takes no place on this listener: only connections in.
    const opened: Socket<undefined>[] = [];
    const hold = async (hostname: string) => {
      const s = await Bun.connect({ hostname, port: o.ports.outbound, socket: { data() {} } });
      opened.push(s);
    };
    await hold("127.0.0.1");
    await hold("::1");
    await hold("::1");
    await Bun.sleep(200);
    // A fourth, on either family, is over the limit.
    const v4 = await fetch(`http://127.0.0.1:${o.ports.outbound}/`, { headers: { host: "payments" } }).catch((e: Error) => e);
    const v6 = await callV6(o.ports.outbound);
    for (const s of opened) s.end();
    expect(v4 instanceof Error ? "error" : v4.status).toBe(503);
    if (!(v4 instanceof Error)) expect(v4.headers.get("x-mesh-error")).toBe("overflow");
    expect(v6.status).toBe(503);
    expect(v6.error).toBe("overflow");
    // Once they close, both serve again.
    expect(await eventually(async () => (await callV6(o.ports.outbound)).status === 200, 5000, 100)).toBe(true);
  }, 30_000);

  test("drain: the twin takes the service's calls during --outbound-drain-delay, refuses new ones after it, calls in flight on it finish, nothing accepts after exit", async () => {
    const slow = fx.service(async () => {
      await Bun.sleep(4000);
      return Response.json({ slow: true });
    });
    const slowPayments = await fx.proxy("payments", slow.url);
    const cfg = fx.config("orders-drain", { payments: [slowPayments.ports.inbound] });
    const certs = join(fx.tmp.path, "certs", "orders");
    const p = await startMesh([
      "proxy", "--service", "orders", "--upstream", fx.echo("orders-drain").url, "--certs-dir", certs, "--config", cfg, "--transparent",
      "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--outbound-drain-delay", "1s", "--drain-timeout", "15s",
    ]);
    const port = (p.ready as { outbound: number }).outbound;
    const inFlight = callV6(port, "payments", "/slow");
    await Bun.sleep(200);
    p.proc.kill("SIGTERM");
    await Bun.sleep(300);
    // Within the delay, the service still calls out, over IPv6 too.
    const during = callV6(port, "payments", "/during");
    await Bun.sleep(1500);
    // Past the delay: neither loopback takes a new call, though the drain goes on.
    expect(p.proc.exitCode).toBeNull();
    const refused6 = await callV6(port);
    const refused4 = await fetch(`http://127.0.0.1:${port}/`, { headers: { host: "payments" } }).then((r) => r.status, () => 0);
    expect({ refused6: refused6.status, refused4 }).toEqual({ refused6: 0, refused4: 0 });
    const first = await inFlight;
    expect(first.status).toBe(200);
    expect(JSON.parse(first.body)).toEqual({ slow: true });
    expect((await during).status).toBe(200);
    expect(await Promise.race([p.proc.exited, Bun.sleep(15_000).then(() => "hung")])).toBe(0);
    // Gone: neither loopback takes a connection.
    expect((await callV6(port)).status).toBe(0);
    expect(await fetch(`http://127.0.0.1:${port}/`, { headers: { host: "payments" } }).then((r) => r.status, () => 0)).toBe(0);
  }, 40_000);
});
