/** Flag values shared by commands: listen addresses, durations and counts, with the flag named on error. */
import type { z } from "zod";
import { parseDuration, timerProblem } from "../config/duration.ts";
import { UsageError } from "../core/errors.ts";
import { isLoopback } from "../core/ip-address.ts";

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

/** An admin listener's ADDRESS:PORT: loopback only (`elsewhere`: what to use off the host instead). */
export function loopbackListen(text: string, flag: string, elsewhere: string): Listen {
  const listen = parseListen(text, flag);
  if (!isLoopback(listen.address)) throw new UsageError(`"${listen.address}" is not a loopback address (127.0.0.1, ::1 or localhost): the admin API is not served off this host; ${elsewhere}`, flag);
  return listen;
}

export function durationFlag(text: string, flag: string): number {
  try {
    return parseDuration(text);
  } catch (err) {
    throw new UsageError((err as Error).message, flag);
  }
}

/** A duration flag that becomes a timer's delay: at most 596h (config/duration.ts). */
export function timerFlag(text: string, flag: string): number {
  const ms = durationFlag(text, flag);
  const problem = timerProblem(ms);
  if (problem !== undefined) throw new UsageError(problem, flag);
  return ms;
}

/** A flag checked by the config field it stands for, so flag and file take the same values. */
export function schemaFlag<T>(schema: z.ZodType<T>, text: string, flag: string): T {
  const checked = schema.safeParse(text);
  if (!checked.success) throw new UsageError(checked.error.issues[0]?.message ?? `invalid value "${text}"`, flag);
  return checked.data;
}

/**
 * A positive whole number of `what`, or undefined when the flag is absent. At most 2^53-1, as a
 * config file's count: past it the number is inexact, and a long run of digits is Infinity.
 */
export function countFlag(text: string | undefined, flag: string, what: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) <= 0) throw new UsageError(`expected a positive number of ${what}, got "${text}"`, flag);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new UsageError(`expected at most ${Number.MAX_SAFE_INTEGER} ${what}, got ${text.length > 20 ? `a number of ${text.length} digits` : `"${text}"`}`, flag);
  return n;
}

/** A TCP upstream flag: `SERVICE:PORT=[ADDRESS:]BINDPORT`, e.g. `postgres:5432=15432`; the address defaults to 127.0.0.1. */
export function parseTcpUpstream(text: string, flag: string): { service: string; port: number; bind: Listen } {
  const m = /^([a-z0-9.-]+):(\d{1,5})=(.+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw new UsageError(`expected SERVICE:PORT=[ADDRESS:]LOCAL_PORT like postgres:5432=127.0.0.1:15432, got "${text}"`, flag);
  const bindText = /^\d+$/.test(m[3]!) ? `127.0.0.1:${m[3]}` : m[3]!;
  return { service: m[1]!, port, bind: parseListen(bindText, flag) };
}

/** A flag that takes one of `choices`; undefined when not given. */
export function choiceFlag<T extends string>(text: string | undefined, choices: readonly T[], flag: string): T | undefined {
  if (text === undefined) return undefined;
  if (!(choices as readonly string[]).includes(text)) throw new UsageError(`expected ${choices.join(" or ")}, got "${text}"`, flag);
  return text as T;
}
