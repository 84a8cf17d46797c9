/** Flag values shared by commands: listen addresses, durations and counts, with the flag named on error. */
import { parseDuration } from "../config/duration.ts";
import { UsageError } from "../core/errors.ts";

export interface Listen {
  address: string;
  port: number;
}

export function parseListen(text: string, flag: string): Listen {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new UsageError(`expected ADDRESS:PORT like 127.0.0.1:15001, got "${text}"`, flag);
  return { address: m[1]!.replace(/^\[|\]$/g, ""), port };
}

export function durationFlag(text: string, flag: string): number {
  try {
    return parseDuration(text);
  } catch (err) {
    throw new UsageError((err as Error).message, flag);
  }
}

/** A positive whole number of `what`, or undefined when the flag is absent. */
export function countFlag(text: string | undefined, flag: string, what: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) <= 0) throw new UsageError(`expected a positive number of ${what}, got "${text}"`, flag);
  return Number(text);
}
