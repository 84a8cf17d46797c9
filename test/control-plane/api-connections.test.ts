/**
 * What the control plane's mTLS API port holds for connections that never become
 * sidecars: at most --max-connections at once (the rest are closed at accept and counted
 * in `mesh check`), and none past its handshake timeout; and its admin port, at most 64,
 * none idle past the idle timeout. A real `mesh control-plane`.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import type { Socket } from "bun";
import { mesh, tempDir } from "../helpers/cli.ts";
import { eventually, startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { stopAll } from "../helpers/procs.ts";

const tmp = tempDir("mesh-cp-conns-");
let cp: TestControlPlane;

beforeAll(async () => {
  cp = await startControlPlane(tmp.path, ["--max-connections", "2"]);
});
afterAll(async () => {
  await stopAll();
  tmp.cleanup();
});

/** A TCP connection that never starts TLS; `closedAt` is ms after connecting, -1 while open. */
async function silent(port: number) {
  const t0 = performance.now();
  let closedAt = -1;
  const socket: Socket<undefined> = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {}, close: () => void (closedAt = performance.now() - t0) } });
  return { socket, closedAt: () => closedAt };
}

test("past --max-connections a connection is closed at accept and mesh check says so; silent ones are closed after the handshake timeout", async () => {
  const held = [await silent(cp.ports.api), await silent(cp.ports.api)];
  const over = await silent(cp.ports.api);
  for (let i = 0; i < 100 && over.closedAt() < 0; i++) await Bun.sleep(20);
  expect(over.closedAt()).toBeGreaterThanOrEqual(0);
  expect(held.map((c) => c.closedAt())).toEqual([-1, -1]);

  const tokenFile = join(tmp.path, "token");
  writeFileSync(tokenFile, cp.adminToken);
  const check = await mesh("check", "--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", tokenFile);
  expect(check.out).toContain("FAIL  the api listener closed 1 connections at accept since start: it held its limit of 2");
  expect(check.out).toMatch(/PASS {2}bootstrap listener: 0 of \d+ connections/);
  const status = (await (await cp.admin("GET", "/v1/status")).json()) as { listeners: { api: { open: number; limit: number; refusedOverLimit: number } } };
  expect(status.listeners.api).toEqual({ open: 2, limit: 2, refusedOverLimit: 1 });

  // A handshake that never starts holds its place for 10 s (Bun's timer fires on 4-second ticks: by 12 s).
  for (let i = 0; i < 80 && held.some((c) => c.closedAt() < 0); i++) await Bun.sleep(200);
  expect(held.every((c) => c.closedAt() >= 9_000)).toBe(true);
  const after = (await (await cp.admin("GET", "/v1/status")).json()) as { listeners: { api: { open: number } } };
  expect(after.listeners.api.open).toBe(0);
}, 30_000);

const adminOpen = async () => ((await (await cp.admin("GET", "/v1/status")).json()) as { listeners: { admin: { open: number } } }).listeners.admin.open;

test("the admin port holds at most 64 connections too: a flood is closed at accept, and idle ones are closed", async () => {
  // 70 at once, beside this process's own keep-alive connections (a few, from the test before). On a loaded
  // machine a connect may fail outright (the kernel's refusal, or the listener's close at accept arriving
  // before the connect completed): refused all the same, at once.
  const ownBefore = await adminOpen();
  let refusedByKernel = 0;
  const flood = await Promise.all(Array.from({ length: 70 }, () => silent(cp.ports.admin).catch(() => (refusedByKernel++, { socket: undefined, closedAt: () => 0 }))));
  await Bun.sleep(500);
  const refused = flood.filter((c) => c.closedAt() >= 0 && c.closedAt() < 1_000);
  expect(refused.length).toBeGreaterThanOrEqual(6);
  const held = flood.filter((c) => !refused.includes(c));
  expect(held.length).toBeLessThanOrEqual(64);
  // Sending nothing, they are closed by the loopback server's idle timeout (10 s, on Bun's 4-second ticks), and the port serves again.
  for (let i = 0; i < 80 && held.some((c) => c.closedAt() < 0); i++) await Bun.sleep(200);
  expect(held.every((c) => c.closedAt() >= 9_000)).toBe(true);
  const status = (await (await cp.admin("GET", "/v1/status")).json()) as { listeners: { admin: { open: number; limit: number; refusedOverLimit: number } } };
  expect(status.listeners.admin.limit).toBe(64);
  // A connect that failed may be the kernel's refusal (never accepted, not counted) or the listener's close at
  // accept reaching the client before its connect completed (counted): the count lies between the two readings.
  expect(status.listeners.admin.refusedOverLimit).toBeGreaterThanOrEqual(refused.length - refusedByKernel);
  expect(status.listeners.admin.refusedOverLimit).toBeLessThanOrEqual(refused.length);
  // Left open: this process's own keep-alive connections (mesh commands run in it), as many as before the flood.
  expect(await eventually(async () => (await adminOpen()) <= ownBefore, 5_000, 200)).toBe(true);
}, 30_000);
