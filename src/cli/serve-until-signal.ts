/** How a long-running command (the sidecar, the control plane) reports ready and stops. */
import type { CommandContext } from "./args.ts";

/**
 * Installs the SIGTERM and SIGINT handlers, then prints the ready line — in that order,
 * because a supervisor may signal the moment it reads the line — and resolves with the
 * exit code `stop` gives once a signal came. `stopping` names the step in the log.
 */
export function serveUntilSignal(ctx: CommandContext, ready: Record<string, unknown>, stopping: string, stop: () => Promise<number>): Promise<number> {
  const stopped = new Promise<number>((resolve) => {
    const onSignal = async (signal: string) => {
      ctx.log.info({ signal }, stopping);
      resolve(await stop());
    };
    process.once("SIGTERM", () => void onSignal("SIGTERM"));
    process.once("SIGINT", () => void onSignal("SIGINT"));
  });
  ctx.out(JSON.stringify({ ready: true, ...ready }));
  return stopped;
}
