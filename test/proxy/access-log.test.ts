/**
 * The access log (`--access-log`): one JSON line per request on each side of a real pair,
 * refusals included, header values unable to forge a field, everything flushed by the
 * time a drained proxy exits; a file moved by log rotation opened again on SIGHUP.
 */
import { expect, test } from "bun:test";
import { existsSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { eventually } from "../helpers/wait.ts";

const fx = fixtureFor("orders", "payments");

interface Line {
  time: string;
  direction: string;
  method: string;
  path: string;
  authority: string;
  status: number;
  duration_ms: number;
  peer: string;
  request_id?: string;
}

const linesOf = (path: string): Line[] =>
  readFileSync(path, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);

test("each side writes a line per request; refusals too; a header cannot forge a field; all of it is there at exit", async () => {
  const outLog = join(fx.tmp.path, "orders-access.log");
  const inLog = join(fx.tmp.path, "payments-access.log");
  const payments = await fx.proxy("payments", fx.echo("payments").url, undefined, ["--access-log", inLog]);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-log", { payments: [payments.ports.inbound] }), ["--access-log", outLog]);
  const forged = 'abc", "status": 200, "x": "\\';
  const ok = await fetch(`http://127.0.0.1:${orders.ports.outbound}/charge?amount=5`, { method: "POST", body: "x", headers: { host: "payments", "x-request-id": forged } });
  expect(ok.status).toBe(200);
  await ok.arrayBuffer();
  const lost = await fetch(`http://127.0.0.1:${orders.ports.outbound}/x`, { headers: { host: "nowhere" } });
  expect(lost.status).toBe(404);
  await lost.arrayBuffer();
  orders.proc.kill("SIGTERM");
  payments.proc.kill("SIGTERM");
  expect(await orders.proc.exited).toBe(0);
  expect(await payments.proc.exited).toBe(0);

  const out = linesOf(outLog);
  expect(out).toHaveLength(2);
  expect(out[0]).toMatchObject({ direction: "outbound", method: "POST", path: "/charge?amount=5", authority: "payments", status: 200, peer: "payments", request_id: forged });
  expect(out[0]!.duration_ms).toBeGreaterThan(0);
  expect(Date.parse(out[0]!.time)).toBeGreaterThan(Date.now() - 60_000);
  expect(out[1]).toMatchObject({ direction: "outbound", method: "GET", path: "/x", authority: "nowhere", status: 404, peer: "", duration_ms: 0 });
  const inbound = linesOf(inLog);
  expect(inbound).toHaveLength(1);
  expect(inbound[0]).toMatchObject({ direction: "inbound", method: "POST", path: "/charge?amount=5", status: 200, peer: "spiffe://mesh.local/ns/default/sa/orders", request_id: forged });
  expect(Object.keys(inbound[0]!)).toEqual(["time", "direction", "method", "path", "authority", "status", "duration_ms", "peer", "request_id"]);
});

test("no --access-log: no log; an unwritable path is refused at start naming the flag", async () => {
  const r = await mesh("proxy", "--service", "orders", "--upstream", "http://127.0.0.1:8080", "--certs-dir", join(fx.tmp.path, "certs", "orders"), "--access-log", join(fx.tmp.path, "no", "such", "dir", "a.log"));
  expect(r.code).toBe(65);
  expect(r.err).toContain("--access-log: cannot open the access log");
  expect(existsSync(join(fx.tmp.path, "no"))).toBe(false);
});

test("after logrotate moves the file, SIGHUP opens it again: old lines stay in the moved file, new ones go to the new", async () => {
  const log = join(fx.tmp.path, "rotated-access.log");
  const payments = await fx.proxy("payments", fx.echo("payments-rotated").url, undefined, ["--access-log", log]);
  const orders = await fx.proxy("orders", fx.echo("orders-rotated").url, fx.config("orders-rotated", { payments: [payments.ports.inbound] }));
  const call = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}${path}`, { headers: { host: "payments" } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  };
  await call("/before");
  // Lines are flushed every second.
  expect(await eventually(() => existsSync(log) && linesOf(log).length === 1, 5000)).toBe(true);
  renameSync(log, `${log}.1`);
  await call("/moved");
  payments.proc.kill("SIGHUP");
  expect(await eventually(() => existsSync(log), 5000)).toBe(true);
  await call("/after");
  payments.proc.kill("SIGTERM");
  expect(await payments.proc.exited).toBe(0);
  // Written before the reopen, to the file it had then; nothing lost.
  expect(linesOf(`${log}.1`).map((l) => l.path)).toEqual(["/before", "/moved"]);
  expect(linesOf(log).map((l) => l.path)).toEqual(["/after"]);
}, 20_000);
