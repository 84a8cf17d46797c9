/**
 * Durations as people write them in config and flags: "250ms", "30s", "5m", "24h",
 * "1h30m". Parsed to milliseconds. A bare number is rejected (is "30" seconds or
 * milliseconds?), except "0" which means the same in every unit.
 */
import { z } from "zod";
import { DataError } from "../core/errors";
import { LONGEST_TIMER_MS } from "../core/timer-delay";

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

/** Why `ms` cannot be a timer's delay, or undefined: setTimeout takes 2^31 − 1 ms at most and fires a longer one at once. */
export function timerProblem(ms: number): string | undefined {
  return ms > LONGEST_TIMER_MS ? `${Math.round(ms / 3_600_000)}h is longer than 596h (about 24.8 days), the longest timer the runtime keeps` : undefined;
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

/** Schemas that read a duration (Duration and those refined from it), for the reference to call durations. */
const DURATIONS = new WeakSet<object>([Duration]);

/** Marks `schema`, a refinement of a duration schema, as reading a duration. */
export function durationSchema<T extends z.ZodType>(schema: T): T {
  DURATIONS.add(schema);
  return schema;
}

export function isDurationSchema(schema: object): boolean {
  return DURATIONS.has(schema);
}

/** A Duration that becomes a timer's delay (a timeout, a backoff, a drain): at most 596h, since a longer timer would fire at once. */
export const TimerDuration = durationSchema(
  Duration.superRefine((ms, ctx) => {
    const problem = timerProblem(ms);
    if (problem !== undefined) ctx.addIssue({ code: "custom", message: problem });
  }),
);
