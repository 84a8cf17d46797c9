/**
 * Writes held to the end of the event loop's turn: each held write is flushed once,
 * after the turn's synchronous work and its microtasks, in the order held; a write held
 * while the turn's writes are flushed goes out in the same flush.
 */
import { expect, test } from "bun:test";
import { holdToEndOfTurn, type HeldWrite } from "../../../src/proxy/transport/turn-writes.ts";

test("held writes go out once each, in order, after the turn's synchronous work and microtasks", async () => {
  const log: string[] = [];
  const writer = (name: string): HeldWrite => ({ flushHeld: () => void log.push(name) });
  holdToEndOfTurn(writer("a"));
  holdToEndOfTurn(writer("b"));
  queueMicrotask(() => log.push("microtask"));
  log.push("sync");
  await new Promise((resolve) => setImmediate(resolve));
  expect(log).toEqual(["sync", "microtask", "a", "b"]);
  // Nothing is flushed twice in the next turn.
  await new Promise((resolve) => setImmediate(resolve));
  expect(log).toEqual(["sync", "microtask", "a", "b"]);
});

test("a write held during the flush goes out in the same flush", async () => {
  const log: string[] = [];
  holdToEndOfTurn({
    flushHeld: () => {
      log.push("first");
      holdToEndOfTurn({ flushHeld: () => void log.push("held while flushing") });
    },
  });
  await new Promise((resolve) => setImmediate(resolve));
  expect(log).toEqual(["first", "held while flushing"]);
});

test("a flush that throws is dropped; the writes after it go out next turn, none twice", async () => {
  // In a process of its own: the throw is an uncaught exception there, as it would be in the proxy.
  const script = `
    import { holdToEndOfTurn } from ${JSON.stringify(new URL("../../../src/proxy/transport/turn-writes.ts", import.meta.url).pathname)};
    const log = [];
    process.on("uncaughtException", (err) => log.push("uncaught: " + err.message));
    holdToEndOfTurn({ flushHeld: () => log.push("a") });
    holdToEndOfTurn({ flushHeld: () => { throw new Error("a bug"); } });
    holdToEndOfTurn({ flushHeld: () => log.push("c") });
    for (let turn = 0; turn < 3; turn++) await new Promise((resolve) => setImmediate(resolve));
    console.log(JSON.stringify(log));
  `;
  const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(child.stdout).text();
  expect(await child.exited).toBe(0);
  expect(JSON.parse(out.trim())).toEqual(["a", "uncaught: a bug", "c"]);
});
