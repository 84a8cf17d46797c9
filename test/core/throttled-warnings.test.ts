import { expect, test } from "bun:test";
import { ThrottledWarnings } from "../../src/core/throttled-warnings.ts";

test("once per interval for each key; keys apart; a flood of keys only starts afresh", () => {
  const w = new ThrottledWarnings(1000);
  expect([w.due("a", 0), w.due("a", 500), w.due("b", 500), w.due("a", 999), w.due("a", 1000)]).toEqual([true, false, true, false, true]);
  for (let i = 0; i < 2000; i++) w.due(`k${i}`, 1000);
  // The memory was started afresh along the way: "a" is due again, as any new key would be.
  expect(w.due("a", 1001)).toBe(true);
});
