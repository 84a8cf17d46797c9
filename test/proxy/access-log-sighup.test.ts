/**
 * Review (an attacker's and a careful operator's) of the sidecar's access log opened again
 * on SIGHUP: the log's directory gone, many SIGHUPs and rotations under traffic, stdout,
 * descriptors held, a FIFO at the log's path, a rotated file deleted.
 * Real `mesh proxy` processes; every one stopped in afterAll.
 * (Moved from test/control-plane/review-serving-renewal.test.ts, whose other reviews are
 * about the control plane.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { MeshFixture } from "../helpers/mesh-fixture.ts";
import { pidAlive, stopAll, type MeshProcess } from "../helpers/procs.ts";
import { eventually } from "../helpers/wait.ts";
import { records, warnOrWorse, countLogged } from "../helpers/log-records.ts";

const fx = new MeshFixture();

beforeAll(async () => {
  await fx.init();
  for (const s of ["orders", "payments"]) await fx.issue(s);
});
afterAll(async () => {
  await stopAll();
  await fx.close();
});

// ---------------------------------------------------------------------------------------
// Small tools

/** Descriptors of `pid` that point at `path` (or at it deleted). */
function fdsOn(pid: number, path: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (target === path || target.startsWith(path + " ") || target.startsWith(path + ".")) out.push(`${fd} -> ${target}`);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

const linesOf = (path: string): Record<string, unknown>[] =>
  existsSync(path)
    ? readFileSync(path, "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>)
    : [];

// ---------------------------------------------------------------------------------------
// The access log, opened again on SIGHUP

describe("the access log and SIGHUP", () => {
  let payments: MeshProcess & { ports: { inbound: number; outbound: number; admin: number } };
  beforeAll(async () => {
    payments = await fx.proxy("payments", fx.echo("payments-static").url);
  });

  /** orders, logging its outbound calls to `log`, calling payments. */
  async function orders(name: string, log: string, extra: string[] = []) {
    return fx.proxy("orders", fx.echo(`orders-${name}`).url, fx.config(`orders-${name}`, { payments: [payments.ports.inbound] }), ["--access-log", log, ...extra]);
  }
  /** One call with a unique request id; the id, or an error. */
  async function call(outbound: number, id: string): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${outbound}/r`, { headers: { host: "payments", "x-request-id": id } });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${id}: ${res.status}`);
    return id;
  }
  const ids = (...paths: string[]) => paths.flatMap((p) => linesOf(p).map((l) => String(l.request_id)));

  test("SIGHUP after the log's directory is gone: the log says why, lines go on to the file it had, none lost, no crash", async () => {
    const dir = join(fx.tmp.path, "logs-gone");
    mkdirSync(dir);
    const log = join(dir, "access.log");
    const o = await orders("gone", log);
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) sent.push(await call(o.ports.outbound, `a${i}`));
    expect(await eventually(() => linesOf(log).length === 5, 5000)).toBe(true);
    renameSync(dir, dir + "-moved"); // the whole directory, as an unmounted or replaced volume would take it
    for (let i = 0; i < 5; i++) sent.push(await call(o.ports.outbound, `b${i}`));
    o.proc.kill("SIGHUP");
    expect(await eventually(() => countLogged(o, "access log not reopened") === 1, 5000)).toBe(true);
    const warning = records(o).find((r) => r.msg.includes("access log not reopened"))!;
    expect(String(warning.reason)).toContain(log);
    expect(String(warning.reason)).toMatch(/ENOENT|no such file/i);
    for (let i = 0; i < 5; i++) sent.push(await call(o.ports.outbound, `c${i}`));
    expect(pidAlive(o.proc.pid)).toBe(true);
    o.proc.kill("SIGTERM");
    expect(await o.proc.exited).toBe(0);
    expect(ids(join(dir + "-moved", "access.log")).sort()).toEqual(sent.sort());
    expect(existsSync(dir)).toBe(false);
  }, 30_000);

  test("40 SIGHUPs, a rotation before every other one, under steady traffic: every request logged exactly once", async () => {
    const dir = join(fx.tmp.path, "logs-many");
    mkdirSync(dir);
    const log = join(dir, "access.log");
    const o = await orders("many", log);
    const sent: string[] = [];
    const failures: string[] = [];
    let running = true;
    const traffic = (async () => {
      for (let i = 0; running && i < 20_000; i++) {
        try {
          sent.push(await call(o.ports.outbound, `m${i}`));
        } catch (err) {
          failures.push(String(err));
        }
      }
    })();
    const rotated: string[] = [];
    for (let i = 0; i < 40; i++) {
      await Bun.sleep(100);
      if (i % 2 === 0 && existsSync(log)) {
        const to = `${log}.${i}`;
        renameSync(log, to);
        rotated.push(to);
      }
      o.proc.kill("SIGHUP");
    }
    await Bun.sleep(500);
    running = false;
    await traffic;
    o.proc.kill("SIGTERM");
    expect(await o.proc.exited).toBe(0);
    expect(failures).toEqual([]);
    expect(sent.length).toBeGreaterThan(200);
    const logged = ids(log, ...rotated);
    const seen = new Map<string, number>();
    for (const id of logged) seen.set(id, (seen.get(id) ?? 0) + 1);
    expect([...seen].filter(([, n]) => n > 1)).toEqual([]);
    expect(sent.filter((id) => !seen.has(id))).toEqual([]);
    expect(logged.length).toBe(sent.length);
    expect(warnOrWorse(o)).toEqual([]);
  }, 60_000);

  test("--access-log - (stdout): SIGHUP changes nothing; lines go on to stdout, none lost", async () => {
    const o = await orders("stdout", "-");
    let out = "";
    const reading = (async () => {
      for await (const chunk of o.proc.stdout) out += new TextDecoder().decode(chunk);
    })();
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) sent.push(await call(o.ports.outbound, `s${i}`));
    for (let i = 0; i < 3; i++) o.proc.kill("SIGHUP");
    await Bun.sleep(200);
    for (let i = 0; i < 5; i++) sent.push(await call(o.ports.outbound, `t${i}`));
    o.proc.kill("SIGTERM");
    expect(await o.proc.exited).toBe(0);
    await reading;
    const logged = out
      .split("\n")
      .filter((l) => l.includes('"direction"'))
      .map((l) => String((JSON.parse(l) as { request_id: string }).request_id));
    expect(logged.sort()).toEqual(sent.sort());
    expect(warnOrWorse(o)).toEqual([]);
  }, 30_000);

  test("50 SIGHUPs hold no more descriptors of the log than one", async () => {
    const dir = join(fx.tmp.path, "logs-fds");
    mkdirSync(dir);
    const log = join(dir, "access.log");
    const o = await orders("fds", log);
    await call(o.ports.outbound, "f-first");
    expect(await eventually(() => linesOf(log).length === 1, 5000)).toBe(true);
    const before = fdsOn(o.proc.pid, log);
    for (let i = 0; i < 50; i++) {
      o.proc.kill("SIGHUP");
      await call(o.ports.outbound, `f${i}`); // a line for each file opened, so each sink writes
      await Bun.sleep(20);
    }
    // The old files' descriptors go as their sinks are let go of, and the last lines are flushed
    // (every second): both polled for the 2 s this test used to sleep (no SIGHUP comes after the
    // loop, so the descriptors only fall and the lines only grow meanwhile).
    let after = fdsOn(o.proc.pid, log);
    await eventually(() => (after = fdsOn(o.proc.pid, log)).length <= Math.max(2, before.length) && linesOf(log).length >= 51, 2000, 100);
    expect({ before: before.length, after: after.length }).toEqual({ before: before.length, after: Math.min(after.length, Math.max(2, before.length)) });
    expect(linesOf(log)).toHaveLength(51);
  }, 30_000);

  test("a FIFO nobody reads put at the log's path before SIGHUP: the sidecar goes on serving (the open must not block it)", async () => {
    const dir = join(fx.tmp.path, "logs-fifo");
    mkdirSync(dir);
    const log = join(dir, "access.log");
    const o = await orders("fifo", log);
    await call(o.ports.outbound, "q-before");
    expect(await eventually(() => linesOf(log).length === 1, 5000)).toBe(true);
    renameSync(log, `${log}.1`);
    expect(Bun.spawnSync(["mkfifo", log]).exitCode).toBe(0);
    o.proc.kill("SIGHUP");
    await Bun.sleep(300);
    // Calls, and the admin port, still answered within a few seconds each.
    const answered = await Promise.race([
      (async () => {
        for (let i = 0; i < 5; i++) await call(o.ports.outbound, `q${i}`);
        return (await fetch(`http://127.0.0.1:${o.ports.admin}/ready`)).status;
      })().catch((e: Error) => e.message),
      Bun.sleep(5000).then(() => "no answer in 5 s"),
    ]);
    // Unblock a sidecar stuck opening it (a reader opens the FIFO), so it can be stopped.
    const unblock = Bun.spawn(["sh", "-c", `timeout 3 cat ${log} > /dev/null`], { stdout: "ignore", stderr: "ignore" });
    await unblock.exited;
    expect(answered).toBe(200);
  }, 30_000);

  test("logrotate's move, SIGHUP, then delete: the sidecar no longer holds the deleted file (its space is freed)", async () => {
    const dir = join(fx.tmp.path, "logs-deleted");
    mkdirSync(dir);
    const log = join(dir, "access.log");
    const o = await orders("deleted", log);
    for (let i = 0; i < 3; i++) await call(o.ports.outbound, `d${i}`);
    expect(await eventually(() => linesOf(log).length === 3, 5000)).toBe(true);
    renameSync(log, `${log}.1`);
    o.proc.kill("SIGHUP");
    expect(await eventually(() => existsSync(log), 5000)).toBe(true);
    await call(o.ports.outbound, "d-after");
    expect(await eventually(() => linesOf(log).length === 1, 5000)).toBe(true);
    expect(linesOf(`${log}.1`)).toHaveLength(3);
    unlinkSync(`${log}.1`); // logrotate's rotate count reached: the oldest goes
    // Steady traffic meanwhile, as a busy sidecar would have.
    for (let i = 0; i < 200; i++) await call(o.ports.outbound, `e${i}`);
    // Let go of within the 1.5 s this test used to sleep (nothing reopens it meanwhile: once gone it stays gone).
    let held = fdsOn(o.proc.pid, `${log}.1`);
    await eventually(() => (held = fdsOn(o.proc.pid, `${log}.1`)).length === 0, 1500, 100);
    expect(held).toEqual([]);
  }, 30_000);
});
