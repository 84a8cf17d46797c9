/**
 * `mesh wait-ready`: block until a sidecar answers /ready with 200. For starting an app
 * only after its sidecar has its certificate and config: a Kubernetes postStart hook on the
 * sidecar container (listed before the app, whose start the hook holds back), or a script.
 */
import { MeshError, UsageError } from "../core/errors.ts";
import { str, type CommandSpec } from "./args.ts";
import { parseListen, timerFlag } from "./flags.ts";
import { hostPort } from "../core/ip-address.ts";

const POLL_MS = 200;
const REQUEST_TIMEOUT_MS = 2_000;

export const waitReadyCommand: CommandSpec = {
  name: "wait-ready",
  summary: "Wait until a sidecar is ready (its /ready answers 200), or fail after --timeout.",
  flags: [
    { name: "admin", type: "string", value: "ADDR:PORT", description: "The sidecar's admin or status listener (default 127.0.0.1:15000)." },
    { name: "timeout", type: "string", value: "DURATION", description: "How long to wait (default 60s)." },
  ],
  examples: ["mesh wait-ready", "mesh wait-ready --admin 127.0.0.1:15021 --timeout 2m"],
  async run(args, ctx) {
    const at = parseListen(str(args, "admin") ?? "127.0.0.1:15000", "--admin");
    // Port 0 is for listening (any free port); nothing can be dialled there, so waiting on it could only time out.
    if (at.port === 0) throw new UsageError(`expected the sidecar's port, 1-65535 (port 0 cannot be dialled), got "${str(args, "admin")}"`, "--admin");
    const timeoutMs = timerFlag(str(args, "timeout") ?? "60s", "--timeout");
    const url = `http://${hostPort(at.address, at.port)}/ready`;
    const deadline = Date.now() + timeoutMs;
    let last = "no answer yet";
    for (;;) {
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
        const text = (await res.text()).trim();
        if (res.status === 200) {
          ctx.out(`ready: ${url}`);
          return 0;
        }
        last = `${res.status} ${text}`;
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() >= deadline) throw new MeshError(`${url} not ready after ${timeoutMs} ms (last: ${last})`, "mesh wait-ready");
      await Bun.sleep(Math.min(POLL_MS, Math.max(0, deadline - Date.now())));
    }
  },
};
