import { describe, expect, test } from "bun:test";
import { ConnectionBudget, connectionLimit, openFilesLimit, parseOpenFilesLimit } from "../../src/core/connection-budget.ts";

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;

describe("ConnectionBudget", () => {
  test("takes up to its limit, refuses past it, and a release makes room for one more", () => {
    const b = new ConnectionBudget(2);
    expect([b.take(), b.take(), b.take()]).toEqual([true, true, false]);
    expect(b.inUse).toBe(2);
    b.release();
    expect([b.take(), b.take()]).toEqual([true, false]);
  });
  test("a release never takes the count below zero", () => {
    const b = new ConnectionBudget(1);
    b.release();
    expect(b.inUse).toBe(0);
    expect([b.take(), b.take()]).toEqual([true, false]);
  });
  test.each([0, -1, 1.5, NaN])("a limit of %p is refused", (limit) => {
    expect(() => new ConnectionBudget(limit)).toThrow("a connection limit must be a positive integer");
  });
});

describe("the open-files limit", () => {
  test("the soft limit is read from /proc/self/limits text", () => {
    expect(parseOpenFilesLimit(LIMITS)).toBe(1024);
  });
  test("unlimited, or no such line, gives undefined", () => {
    expect(parseOpenFilesLimit(LIMITS.replace("1024 ", "unlimited "))).toBeUndefined();
    expect(parseOpenFilesLimit("Limit Soft Hard\n")).toBeUndefined();
  });
  test("this process's limit is read (Linux)", () => {
    expect(openFilesLimit()).toBeGreaterThan(0);
  });
  test("a listener's default: its share of the limit, divided by what each connection costs, never below 64", () => {
    expect(connectionLimit(20_000, 0.5)).toBe(10_000);
    expect(connectionLimit(20_000, 0.5, 3)).toBe(3333);
    expect(connectionLimit(100, 0.5)).toBe(64);
    expect(connectionLimit(undefined, 0.5)).toBe(2048);
  });
});
