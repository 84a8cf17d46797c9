import { expect, test } from "bun:test";
import { eventNow, readEvent } from "../../src/core/clock.ts";

/** Spins until performance.now() has moved on, so two fresh reads must differ. */
function tick(): void {
  const t = performance.now();
  while (performance.now() === t);
}

test("within a socket read eventNow() is the time the read was handed over, also in nested reads", () => {
  const seen: number[] = [];
  const before = performance.now();
  readEvent(
    {
      onData() {
        seen.push(eventNow());
        tick();
        seen.push(eventNow());
        readEvent({ onData: () => void seen.push(eventNow()) }, Buffer.alloc(0));
        tick();
        seen.push(eventNow());
      },
    },
    Buffer.alloc(0),
  );
  expect(new Set(seen).size).toBe(1);
  expect(seen[0]!).toBeGreaterThanOrEqual(before);
});

test("outside a read, and after one that threw, eventNow() reads the clock", () => {
  expect(() => readEvent({ onData: () => { throw new Error("reader failed"); } }, Buffer.alloc(0))).toThrow("reader failed");
  const a = eventNow();
  tick();
  expect(eventNow()).toBeGreaterThan(a);
});
