/**
 * Logging: pino JSON lines on stderr; when a person watches a terminal, the same
 * records rendered as readable lines. Rendering happens in-process (no worker-thread
 * transport) because pino's transports do not load inside a compiled binary.
 */
import { writeSync } from "node:fs";
import pino, { type Logger, type LevelWithSilent } from "pino";

export type { Logger };
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const LEVEL_NAMES: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };
const LEVEL_COLORS: Record<number, string> = { 10: "90", 20: "36", 30: "32", 40: "33", 50: "31", 60: "35" };
const BASE_FIELDS = new Set(["level", "time", "msg", "pid", "hostname", "role"]);

/** Turns one pino JSON record into `12:00:01.123 INFO  proxy  message key=value`. */
export function renderPretty(line: string, color: boolean): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line; // not ours; pass through untouched rather than lose it
  }
  const level = typeof rec.level === "number" ? rec.level : 30;
  const time = new Date(typeof rec.time === "number" ? rec.time : Date.now()).toISOString().slice(11, 23);
  const name = (LEVEL_NAMES[level] ?? String(level)).padEnd(5);
  const tag = color ? `\x1b[${LEVEL_COLORS[level] ?? "0"}m${name}\x1b[0m` : name;
  const role = typeof rec.role === "string" ? ` ${rec.role}` : "";
  const extras = Object.entries(rec)
    .filter(([k]) => !BASE_FIELDS.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  return `${time} ${tag}${role} ${String(rec.msg ?? "")}${extras ? " " + extras : ""}\n`;
}

function prettyStream(fd: number, color: boolean): { write(chunk: string): void } {
  return {
    write(chunk: string) {
      for (const line of chunk.split("\n")) if (line) writeSync(fd, renderPretty(line, color));
    },
  };
}

export interface LogOptions {
  level?: LogLevel;
  /** "json", "pretty", or "auto": pretty when stderr is a terminal. */
  format?: "json" | "pretty" | "auto";
  role?: string;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const format = opts.format ?? "auto";
  const pretty = format === "pretty" || (format === "auto" && process.stderr.isTTY === true);
  const dest = pretty ? prettyStream(2, process.stderr.isTTY === true) : pino.destination({ fd: 2, sync: true });
  return pino(
    {
      level: (opts.level ?? "info") as LevelWithSilent,
      base: opts.role ? { role: opts.role } : {},
      timestamp: pino.stdTimeFunctions.epochTime,
    },
    dest,
  );
}
