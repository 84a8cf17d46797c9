/** `mesh demo`: a working mesh on embedded defaults, with traffic, watched live. */
import { UsageError } from "../core/errors.ts";
import { runDemo } from "../demo/run.ts";
import { bool, str, type CommandSpec } from "./args.ts";
import { timerFlag } from "./flags.ts";

const MAX_DURATION_MS = 24 * 3600_000;

export const demoCommand: CommandSpec = {
  name: "demo",
  summary: "Run a demo mesh: a control plane, three services behind sidecars, traffic and a live summary.",
  description:
    "Starts a control plane (embedded store, new CA) and three services, each behind its own sidecar that\n" +
    "bootstraps its certificate with a join token: frontend (Bun) calls catalog (Python) and pricing (Bun,\n" +
    "two instances, one flaky, so retries and outlier ejection show). A load generator sends steady traffic\n" +
    "to frontend through its own sidecar, and the summary shows each instance's and each call's request\n" +
    "rate, success rate, latency, retries and ejections from the sidecars' /metrics. Everything listens on\n" +
    "loopback ports the OS picks and lives in one temporary directory; when the duration ends or on Ctrl-C\n" +
    "every process it started is stopped and the directory removed.",
  flags: [
    { name: "duration", type: "string", value: "DURATION", default: "1h", description: "How long traffic runs before the demo stops itself (at most 24h)." },
    { name: "rate", type: "string", value: "N", default: "20", description: "Requests per second the load generator sends (1 to 500)." },
    { name: "json", type: "boolean", description: "One JSON event per line (progress, ready with every pid, summaries, stopped) instead of tables." },
    { name: "python", type: "string", value: "CMD", default: "python3", description: "Python interpreter for the catalog service; Bun serves it if none is found." },
  ],
  examples: ["mesh demo", "mesh demo --duration 2m --rate 50", "npm start"],
  async run(args, ctx) {
    const durationMs = timerFlag(str(args, "duration")!, "--duration");
    if (durationMs <= 0 || durationMs > MAX_DURATION_MS) throw new UsageError(`expected more than 0 and at most 24h, got "${str(args, "duration")}"`, "--duration");
    const rate = Number(str(args, "rate"));
    if (!Number.isInteger(rate) || rate < 1 || rate > 500) throw new UsageError(`expected a whole number from 1 to 500, got "${str(args, "rate")}"`, "--rate");
    const json = bool(args, "json");
    const tty = !json && process.stdout.isTTY ? { write: (text: string) => void process.stdout.write(text), columns: () => process.stdout.columns || 120 } : undefined;
    return runDemo({ durationMs, rate, json, python: str(args, "python")!, out: ctx.out, tty });
  },
};
