import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Deadline } from "../../src/proxy/deadline.ts";
import { DeadlineQueue, type QueuedDeadline } from "../../src/proxy/deadline-queue.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function entry(log: string[], name: string): QueuedDeadline {
  return { due: 0, prev: undefined, next: undefined, expire: () => log.push(name) };
}

describe("Deadline", () => {
  test("expires once its time has passed: aborted, a TimeoutError, listeners called once", async () => {
    const d = new Deadline(20);
    let calls = 0;
    d.addEventListener("abort", () => calls++);
    expect(d.aborted).toBe(false);
    await sleep(80);
    expect(d.expired).toBe(true);
    expect(d.aborted).toBe(true);
    expect((d.reason as DOMException).name).toBe("TimeoutError");
    expect((d.reason as DOMException).message).toContain("20 ms");
    expect(calls).toBe(1);
  });

  test("a cleared deadline never fires; a removed listener is not called", async () => {
    const cleared = new Deadline(20);
    const kept = new Deadline(20);
    let clearedCalls = 0;
    let removedCalls = 0;
    const removed = () => removedCalls++;
    cleared.addEventListener("abort", () => clearedCalls++);
    kept.addEventListener("abort", removed);
    kept.removeEventListener("abort", removed);
    cleared.clear();
    await sleep(80);
    expect(cleared.expired).toBe(false);
    expect(clearedCalls).toBe(0);
    expect(kept.expired).toBe(true);
    expect(removedCalls).toBe(0);
  });

  test("zero means no timeout: never expires", async () => {
    const d = new Deadline(0);
    await sleep(30);
    expect(d.expired).toBe(false);
    expect(d.aborted).toBe(false);
    d.clear();
  });

  test("cancel (the caller left): aborted at once with an AbortError, listeners once, no expiry after", async () => {
    for (const ms of [20, 0]) {
      const d = new Deadline(ms);
      let calls = 0;
      d.addEventListener("abort", () => calls++);
      d.cancel();
      d.cancel();
      expect(d.aborted).toBe(true);
      expect((d.reason as DOMException).name).toBe("AbortError");
      expect(calls).toBe(1);
      await sleep(60);
      expect(d.expired).toBe(false);
      expect(calls).toBe(1);
    }
  });

  test("a pending deadline does not keep the process alive", async () => {
    const script = `import { Deadline } from ${JSON.stringify(join(import.meta.dir, "../../src/proxy/deadline.ts"))}; new Deadline(600_000); console.log("made");`;
    const started = performance.now();
    const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
    const killer = setTimeout(() => child.kill(), 15_000);
    const code = await child.exited;
    clearTimeout(killer);
    expect(await new Response(child.stdout).text()).toBe("made\n");
    expect(code).toBe(0);
    expect(performance.now() - started).toBeLessThan(15_000);
  });
});

describe("DeadlineQueue", () => {
  test("expires entries in order, skips removed ones, and re-arms after its head is removed", async () => {
    const q = new DeadlineQueue(30);
    const log: string[] = [];
    const a = entry(log, "a");
    const b = entry(log, "b");
    const c = entry(log, "c");
    q.add(a);
    await sleep(10);
    q.add(b);
    q.add(c);
    q.remove(a); // the timer was armed for a: it fires early for b and must wait again
    q.remove(c);
    await sleep(15);
    expect(log).toEqual([]);
    await sleep(60);
    expect(log).toEqual(["b"]);
    expect(q.empty).toBe(true);
  });

  test("removing the middle, the tail, or twice keeps the list whole", async () => {
    const q = new DeadlineQueue(10);
    const log: string[] = [];
    const xs = ["a", "b", "c", "d"].map((n) => entry(log, n));
    for (const x of xs) q.add(x);
    q.remove(xs[1]!);
    q.remove(xs[3]!);
    q.remove(xs[3]!);
    await sleep(50);
    expect(log).toEqual(["a", "c"]);
    expect(q.empty).toBe(true);
  });

  test("a deadline added while it fires is expired on its own time", async () => {
    const q = new DeadlineQueue(20);
    const log: string[] = [];
    const late = entry(log, "late");
    q.add({ due: 0, prev: undefined, next: undefined, expire: () => (log.push("first"), q.add(late)) });
    await sleep(40);
    expect(log).toEqual(["first"]);
    await sleep(60);
    expect(log).toEqual(["first", "late"]);
  });
});
