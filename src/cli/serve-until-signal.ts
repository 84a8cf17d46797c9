/** How a long-running command (the sidecar, the control plane) reports ready and stops. */
import type { CommandContext } from "./args.ts";

/**
 * Installs the SIGTERM and SIGINT handlers, then prints the ready line — in that order,
 * because a supervisor may signal the moment it reads the line — and resolves with the
 * exit code `stop` gives once a signal came. `stopping` names the step in the log.
 *
 * The handlers stay for the process's life and `stop` runs once: a signal without a
 * handler takes its default action, so a second SIGTERM (a supervisor repeating itself,
 * a user pressing Ctrl-C twice) would otherwise end the process mid-stop. Later signals
 * are logged, and change nothing.
 */
export function serveUntilSignal(ctx: CommandContext, ready: Record<string, unknown>, stopping: string, stop: () => Promise<number>): Promise<number> {
  const stopped = new Promise<number>((resolve, reject) => {
    let first: string | undefined;
    const onSignal = (signal: string) => {
      if (first !== undefined) return ctx.log.info({ signal, first }, `${signal} while ${stopping} already: it goes on as it was`);
      first = signal;
      ctx.log.info({ signal }, stopping);
      stop().then(resolve, reject);
    };
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    process.on("SIGINT", () => onSignal("SIGINT"));
  });
  ctx.out(JSON.stringify({ ready: true, ...ready }));
  return stopped;
}
