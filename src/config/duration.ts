/**
 * Durations as people write them in config and flags: "250ms", "30s", "5m", "24h",
 * "1h30m". Parsed to milliseconds. A bare number is rejected (is "30" seconds or
 * milliseconds?), except "0" which means the same in every unit.
 */
import { z } from "zod";
import { DataError } from "../core/errors";

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
const WHOLE = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/;
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
const EXAMPLES = `like "250ms", "30s", "5m" or "1h30m"`;

/** Milliseconds, or the reason `text` is not a duration. */
function tryParse(text: string): { ms: number } | { problem: string } {
  if (text === "0") return { ms: 0 };
  if (/^\d+(?:\.\d+)?$/.test(text)) return { problem: `duration "${text}" has no unit: use ms, s, m or h, ${EXAMPLES}` };
  if (!WHOLE.test(text)) return { problem: `expected a duration ${EXAMPLES}, got "${text}"` };
  let ms = 0;
  for (const [, amount, unit] of text.matchAll(PART)) ms += Number(amount) * UNIT_MS[unit!]!;
  if (!Number.isSafeInteger(Math.round(ms))) return { problem: `duration "${text}" is too long` };
  return { ms };
}

/** Why `text` is not a duration, or undefined when it is one. */
export function durationProblem(text: string): string | undefined {
  const result = tryParse(text);
  return "problem" in result ? result.problem : undefined;
}

/** Parses a duration to milliseconds; throws DataError naming the bad text. */
export function parseDuration(text: string): number {
  const result = tryParse(text);
  if ("problem" in result) throw new DataError(result.problem);
  return result.ms;
}

/** A duration string in a manifest; parses to milliseconds. */
export const Duration = z
  // YAML reads `drainTimeout: 30` as a number: say the unit is missing, not "expected string".
  .string({ error: (iss) => (typeof iss.input === "number" ? `duration ${iss.input} has no unit: use ms, s, m or h, ${EXAMPLES}` : undefined) })
  .transform((text, ctx) => {
    const result = tryParse(text);
    if ("ms" in result) return result.ms;
    ctx.issues.push({ code: "custom", message: result.problem, input: text });
    return z.NEVER;
  })
  .describe(`A duration: a number and unit (ms, s, m, h), ${EXAMPLES}; parsed to milliseconds.`);
