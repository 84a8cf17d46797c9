import { expect, test } from "bun:test";
import { boundedMemo } from "../../src/core/bounded-memo.ts";

test("makes each value once, and forgets everything when the limit is reached", () => {
  const made: string[] = [];
  const memo = boundedMemo(2, (key) => (made.push(key), `v:${key}`));
  expect(memo("a")).toBe("v:a");
  expect(memo("a")).toBe("v:a");
  expect(memo("b")).toBe("v:b");
  expect(made).toEqual(["a", "b"]);
  expect(memo("c")).toBe("v:c"); // full: cleared, then c
  expect(memo("a")).toBe("v:a"); // made again
  expect(made).toEqual(["a", "b", "c", "a"]);
});
