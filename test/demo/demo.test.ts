/**
 * `mesh demo` as a user runs it (from source, to stay fast): traffic flows through every
 * sidecar over mTLS with the expected caller identities, the flaky instance gets retried
 * around and ejected, and whether it ends by its duration, by SIGINT or by a child that
 * fails to start, no process it started survives and its temporary directory is gone.
 */
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { parseMetrics, sum } from "../../src/demo/prometheus.ts";
import { lookNextLines } from "../../src/demo/render.ts";
import { pidAlive } from "../helpers/procs.ts";

const MAIN = join(import.meta.dir, "..", "..", "src", "main.ts");
const TD = "spiffe://mesh.local/ns/default/sa";

type Event = Record<string, any>;

interface Demo {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  events: Event[];
  /** The first event (already seen or still to come) that `match` accepts. */
  next(match: (e: Event) => boolean, timeoutMs?: number): Promise<Event>;
  stderr(): string;
}

// Everything the demos under test started, so a failing test still leaves nothing behind.
const pidsSeen = new Set<number>();
const dirsSeen = new Set<string>();
// The demos' TMPDIR: a sidecar killed by a test leaves its tunnel directory there, for this file to remove.
const childTmp = mkdtempSync(join(tmpdir(), "mesh-demo-test-"));

afterAll(() => {
  for (const pid of pidsSeen) if (pidAlive(pid)) process.kill(pid, "SIGKILL");
  for (const dir of [...dirsSeen, childTmp]) rmSync(dir, { recursive: true, force: true });
});


function startDemo(...args: string[]): Demo {
  const proc = Bun.spawn([process.execPath, MAIN, "demo", "--json", ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, TMPDIR: childTmp } });
  pidsSeen.add(proc.pid);
  const events: Event[] = [];
  const waiters = new Set<() => void>();
  let err = "";
  void (async () => {
    for await (const chunk of proc.stderr) err += new TextDecoder().decode(chunk);
  })();
  void (async () => {
    let buf = "";
    for await (const chunk of proc.stdout) {
      buf += new TextDecoder().decode(chunk);
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const e = JSON.parse(buf.slice(0, nl)) as Event;
        buf = buf.slice(nl + 1);
        if (typeof e.pid === "number") pidsSeen.add(e.pid);
        if (typeof e.tempDir === "string") dirsSeen.add(e.tempDir);
        events.push(e);
        for (const w of waiters) w();
      }
    }
  })();
  return {
    proc,
    events,
    stderr: () => err,
    next(match, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = events.find(match);
          if (!found) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(found);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no matching event within ${timeoutMs} ms; events: ${events.map((e) => e.event).join(", ")}\n${err}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
}

/** Every pid the demo reported starting, and its temporary directory: all gone. */
function expectCleanedUp(d: Demo): void {
  const started = d.events.filter((e) => e.event === "started").map((e) => e.pid as number);
  expect(started.length).toBeGreaterThan(0);
  expect(started.filter(pidAlive)).toEqual([]);
  const dir = d.events.find((e) => e.event === "starting")!.tempDir as string;
  expect(existsSync(dir)).toBe(false);
}

test("the hint for 'mesh get service' promises the stored manifests it shows, not endpoints", () => {
  const lines = lookNextLines({ mesh: "mesh", adminUrl: "http://127.0.0.1:1", adminTokenFile: "/t/admin-token", tempDir: "/t", sidecars: [{ instance: "frontend", adminPort: 2 }] });
  const getService = lines.find((l) => l.includes("mesh get service"))!;
  expect(getService).toContain("stored manifests");
  expect(getService).not.toContain("endpoints");
});

test("a bounded run: traffic through every sidecar over mTLS, retries and an ejection, then nothing left", async () => {
  const d = startDemo("--duration", "12s");
  const ready = await d.next((e) => e.event === "ready");
  expect(Object.keys(ready.pids).sort()).toEqual(
    ["catalog (python3)", "control plane", "sidecar catalog", "sidecar frontend", "sidecar loadgen", "sidecar pricing-1", "sidecar pricing-2"],
  );
  for (const s of ready.sidecars) expect(s.identity).toBe(`${TD}/${s.service}`);

  // Independently of the demo's own summary: each sidecar's metrics name the caller its
  // mTLS handshake proved.
  await d.next((e) => e.event === "summary");
  const expectedCaller: Record<string, string> = { frontend: "loadgen", catalog: "frontend", "pricing-1": "frontend", "pricing-2": "frontend" };
  for (const s of ready.sidecars) {
    const caller = expectedCaller[s.instance];
    if (!caller) continue;
    const samples = parseMetrics(await (await fetch(`http://127.0.0.1:${s.ports.admin}/metrics`)).text());
    expect(sum(samples, "mesh_requests_total", { direction: "inbound", peer: caller })).toBeGreaterThan(0);
    expect(sum(samples, "mesh_requests_total", { direction: "inbound" })).toBe(sum(samples, "mesh_requests_total", { direction: "inbound", peer: caller }));
  }

  expect(await d.proc.exited).toBe(0);
  const final = d.events.find((e) => e.event === "summary" && e.final)!;
  const row = (name: string) => final.instances.find((r: Event) => r.instance === name);
  expect(row("frontend").callers.loadgen).toBeGreaterThan(100);
  expect(row("catalog").lang).toBe("Python");
  expect(row("catalog").callers.frontend).toBeGreaterThan(100);
  expect(row("pricing-1").callers.frontend).toBeGreaterThan(0);
  expect(row("pricing-2").callers.frontend).toBeGreaterThan(0);
  expect(row("pricing-2").failed).toBeGreaterThan(0);
  // What the services themselves were told in x-mesh-client-id.
  expect(final.seenCallers).toEqual({ frontend: [`${TD}/loadgen`], catalog: [`${TD}/frontend`], pricing: [`${TD}/frontend`] });

  const pricing = final.routes.find((r: Event) => r.caller === "frontend" && r.service === "pricing");
  expect(pricing.retries).toBeGreaterThan(0);
  expect(pricing.ejections).toBeGreaterThan(0);
  // Retries and ejection hide the flaky instance from the client.
  expect(final.traffic.sent).toBeGreaterThan(150);
  expect(final.traffic.failed).toBeLessThanOrEqual(final.traffic.sent * 0.01);

  const stopped = d.events.find((e) => e.event === "stopped")!;
  expect(stopped).toMatchObject({ reason: "duration", processes: 7, removed: true });
  expectCleanedUp(d);
}, 40_000);

test("SIGINT mid-run stops every process it started and removes its directory", async () => {
  const d = startDemo("--duration", "60s");
  await d.next((e) => e.event === "summary");
  d.proc.kill("SIGINT");
  const code = await Promise.race([d.proc.exited, Bun.sleep(15_000).then(() => "timeout")]);
  expect(code).toBe(0);
  expect(d.events.find((e) => e.event === "stopped")).toMatchObject({ reason: "SIGINT", processes: 7, removed: true });
  expectCleanedUp(d);
}, 30_000);

test("a child that fails to start: a clear error naming it, and everything already started is stopped", async () => {
  const d = startDemo("--python", "/bin/false");
  expect(await d.proc.exited).toBe(1);
  expect(d.stderr()).toContain("catalog (/bin/false) did not start: exited with code 1 before it was ready");
  expect(d.events.find((e) => e.event === "stopped")).toMatchObject({ reason: "failure", removed: true });
  expectCleanedUp(d);
}, 20_000);

test("a child that dies mid-run: the demo says which, stops the rest and removes its directory", async () => {
  const d = startDemo("--duration", "60s");
  const ready = await d.next((e) => e.event === "ready");
  process.kill(ready.pids["sidecar pricing-1"], "SIGKILL");
  expect(await d.proc.exited).toBe(1);
  expect(d.stderr()).toContain("sidecar pricing-1 exited unexpectedly (killed by SIGKILL)");
  expect(d.events.find((e) => e.event === "stopped")).toMatchObject({ reason: "failure", processes: 7, removed: true });
  expectCleanedUp(d);
}, 30_000);
