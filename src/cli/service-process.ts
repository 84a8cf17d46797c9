/**
 * The service process `mesh run` supervises: started with our stdio, its end reported
 * the way a shell reports it (exit code, or 128 + signal number).
 */
import { constants } from "node:os";
import type { Subprocess } from "bun";
import { errorMessage } from "../core/errors.ts";

export type ServiceProcess = Subprocess<"inherit", "inherit", "inherit">;

/** Why the command could not start, with the shell's code: 127 not found, 126 not executable. */
export interface StartFailure {
  code: 126 | 127;
  message: string;
}

export function spawnService(argv: string[], env: Record<string, string>): ServiceProcess | StartFailure {
  try {
    return Bun.spawn(argv, { env, stdin: "inherit", stdout: "inherit", stderr: "inherit" });
  } catch (err) {
    const cmd = argv[0]!;
    if ((err as { code?: string }).code === "ENOENT")
      return { code: 127, message: `cannot start "${cmd}": not found${cmd.includes("/") ? "" : " in $PATH"}` };
    return { code: 126, message: `cannot start "${cmd}": ${errorMessage(err)}` };
  }
}

export function running(proc: ServiceProcess): boolean {
  return proc.exitCode === null && proc.signalCode === null;
}

/** True if the process exits within `ms`; the timer is cleared so it holds nothing open. */
export async function exitsWithin(proc: ServiceProcess, ms: number): Promise<boolean> {
  let timer: Timer | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([proc.exited.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Exit status of an exited process: its code, or 128 + the signal's number. */
export function exitStatus(proc: ServiceProcess): number {
  const signal = proc.signalCode;
  if (signal !== null) return 128 + (typeof signal === "number" ? signal : constants.signals[signal]);
  return proc.exitCode ?? 1;
}
