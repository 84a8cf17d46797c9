/**
 * How many connections a process's listeners may hold at once, shared by all of them.
 * Past it a new connection is closed as soon as it is accepted. Without a cap, a flood
 * of connections ends in accept() failing for want of file descriptors (EMFILE), and Bun
 * 1.4.5 retries that accept in a loop that burns a whole core until a descriptor is
 * freed (measured: ~1 s of CPU per second). So listeners stay well below the descriptor
 * limit, and upstream connections, files and the control-plane client keep the rest.
 */
import { readFileSync } from "node:fs";
import type { Logger } from "./log.ts";
import { ThrottledWarnings } from "./throttled-warnings.ts";

export class ConnectionBudget {
  private held = 0;

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`a connection limit must be a positive integer, got ${limit}`);
  }

  /** `n` places more (one per descriptor a connection holds), if the limit allows; every true is paired with release(n). */
  take(n = 1): boolean {
    if (this.held + n > this.limit) return false;
    this.held += n;
    return true;
  }

  release(n = 1): void {
    this.held = Math.max(0, this.held - n);
  }

  get inUse(): number {
    return this.held;
  }
}

/** The soft limit on open files in /proc/self/limits text, or undefined (absent, unlimited). */
export function parseOpenFilesLimit(limitsText: string): number | undefined {
  const line = limitsText.split("\n").find((l) => l.startsWith("Max open files"));
  const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
  return soft !== undefined && /^\d+$/.test(soft) ? Number(soft) : undefined;
}

/** This process's limit on open files (Bun raises the soft limit to the hard one at start), where the system tells it. */
export function openFilesLimit(): number | undefined {
  try {
    return parseOpenFilesLimit(readFileSync("/proc/self/limits", "utf8"));
  } catch {
    return undefined;
  }
}

/** Where the descriptor limit cannot be read (not Linux): a cap below any usual default limit. */
const FALLBACK_LIMIT = 4096;

/**
 * A listener's cap from the descriptor limit `fds` (undefined: unknown): `share` of
 * them, each connection costing `descriptorsEach`, never below 64.
 */
export function connectionLimit(fds: number | undefined, share: number, descriptorsEach = 1): number {
  return Math.max(64, Math.floor(((fds ?? FALLBACK_LIMIT) * share) / descriptorsEach));
}

/** A warning when a listener closes connections at accept, at most once per 10 s for the process; `countedIn` says where to look. */
export function limitWarning(log: Logger, countedIn: string): (listener: string, budget: ConnectionBudget) => void {
  const warnings = new ThrottledWarnings();
  return (listener, budget) => {
    if (!warnings.due("limit")) return;
    log.warn({ listener, limit: budget.limit }, `connection limit reached: new connections are closed at accept (counted in ${countedIn})`);
  };
}
