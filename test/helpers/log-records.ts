/** A mesh process's JSON log lines (pino, on stderr), read back by tests. */

export interface LogRecord {
  level: number;
  msg: string;
  [k: string]: unknown;
}

type Logged = { stderr: () => string };

/** The JSON log records a process wrote to stderr so far. */
export function records(p: Logged): LogRecord[] {
  const out: LogRecord[] = [];
  for (const line of p.stderr().split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as LogRecord);
    } catch {
      // a line cut in the middle of being written
    }
  }
  return out;
}

/** Records at warn (40) or above. */
export const warnOrWorse = (p: Logged) => records(p).filter((r) => r.level >= 40);

/** How many records' messages contain `msg`. */
export const countLogged = (p: Logged, msg: string) => records(p).filter((r) => r.msg.includes(msg)).length;
