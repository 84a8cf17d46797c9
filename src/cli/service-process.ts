/**
 * The service process `mesh run` supervises: started with our stdio, its end reported
 * the way a shell reports it (exit code, or 128 + signal number).
 *
 * It starts in a process group of its own (Bun's `detached`: setsid(), so a session of its
 * own too; Bun has no setpgid alone), and signals go to the whole group, as a terminal's
 * Ctrl-C does: the command's own children (workers, the program behind a shell) hear
 * them, and a SIGKILL leaves none of them running, orphaned. A terminal's own signals
 * reach mesh run only, which passes them on.
 */
import { constants } from "node:os";
import type { Subprocess } from "bun";
import { errorMessage } from "../core/errors.ts";
import { settlesWithin } from "../core/settles-within.ts";

export type ServiceProcess = Subprocess<"inherit", "inherit", "inherit">;

const GROUP_POLL_MS = 20;

/** Why the command could not start, with the shell's code: 127 not found, 126 not executable. */
export interface StartFailure {
  code: 126 | 127;
  message: string;
}

export function spawnService(argv: string[], env: Record<string, string>): ServiceProcess | StartFailure {
  try {
    return Bun.spawn(argv, { env, stdin: "inherit", stdout: "inherit", stderr: "inherit", detached: true });
  } catch (err) {
    const cmd = argv[0]!;
    if ((err as { code?: string }).code === "ENOENT")
      return { code: 127, message: `cannot start "${cmd}": not found${cmd.includes("/") ? "" : " in $PATH"}` };
    return { code: 126, message: `cannot start "${cmd}": ${errorMessage(err)}` };
  }
}

/** Sends `signal` to the service's process group: the service and every process it started that stayed in it. */
export function signalService(proc: ServiceProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-proc.pid, signal);
  } catch {
    // Nothing of the group is left (ESRCH), or nothing of it we may signal (EPERM): the service itself is tried alone.
    if (running(proc)) proc.kill(signal);
  }
}

/** True once no process of the service's group is left, not even one dead but not yet reaped (by its parent, or init), within `ms`. */
export async function groupGoneWithin(proc: ServiceProcess, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      process.kill(-proc.pid, 0);
    } catch (err) {
      return (err as { code?: string }).code === "ESRCH";
    }
    if (Date.now() >= deadline) return false;
    await Bun.sleep(GROUP_POLL_MS);
  }
}

export function running(proc: ServiceProcess): boolean {
  return proc.exitCode === null && proc.signalCode === null;
}

/** True if the process exits within `ms`; the timer is cleared so it holds nothing open. */
export function exitsWithin(proc: ServiceProcess, ms: number): Promise<boolean> {
  return settlesWithin(proc.exited, ms);
}

/** Exit status of an exited process: its code, or 128 + the signal's number. */
export function exitStatus(proc: ServiceProcess): number {
  const signal = proc.signalCode;
  if (signal !== null) return 128 + (typeof signal === "number" ? signal : constants.signals[signal]);
  return proc.exitCode ?? 1;
}
