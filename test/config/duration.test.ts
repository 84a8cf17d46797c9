import { describe, expect, test } from "bun:test";
import { DataError } from "../../src/core/errors";
import { Duration, durationProblem, parseDuration } from "../../src/config/duration";

describe("parseDuration", () => {
  test.each([
    ["250ms", 250],
    ["30s", 30_000],
    ["5m", 300_000],
    ["24h", 86_400_000],
    ["1h30m", 5_400_000],
    ["1m30s500ms", 90_500],
    ["1.5s", 1_500],
    ["0", 0],
    ["0s", 0],
  ])("%s → %d ms", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  test("a bare number names the missing unit", () => {
    expect(() => parseDuration("30")).toThrow('duration "30" has no unit: use ms, s, m or h, like "250ms", "30s", "5m" or "1h30m"');
  });

  test.each(["", "30sec", "-5s", "5 s", "1d", "h", "s30", " 30s", "1.s"])("%p is rejected with an example", (text) => {
    expect(durationProblem(text)).toBe(`expected a duration like "250ms", "30s", "5m" or "1h30m", got "${text}"`);
  });

  test("throws DataError so the CLI maps it to a data error", () => {
    expect(() => parseDuration("soon")).toThrow(DataError);
  });

  test("an absurdly long duration is rejected", () => {
    expect(durationProblem("99999999999999999999h")).toBe('duration "99999999999999999999h" is too long');
  });

  test("durationProblem is undefined for a valid duration", () => {
    expect(durationProblem("1h")).toBeUndefined();
  });
});

describe("Duration schema", () => {
  test("parses to milliseconds", () => {
    expect(Duration.parse("2m")).toBe(120_000);
  });

  test("reports the problem as the issue message", () => {
    const result = Duration.safeParse("2 minutes");
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.message).toBe('expected a duration like "250ms", "30s", "5m" or "1h30m", got "2 minutes"');
  });
});
