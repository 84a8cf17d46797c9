/**
 * `mesh run`: a service and its sidecar as one unit. The sidecar starts first, exactly as
 * `mesh proxy` would; the service starts once the sidecar is ready; when the service ends
 * the sidecar drains, so a batch job's process ends too. On SIGTERM the sidecar leaves
 * discovery and stops taking inbound connections before the service hears the signal, so
 * callers go elsewhere while it finishes; its outbound calls are served until it exits.
 */
import { UsageError } from "../core/errors.ts";
import type { CommandContext, CommandSpec } from "./args.ts";
import { proxyCommand, startProxyFromArgs, type Sidecar } from "./proxy.ts";
import { runtimeTuningRemoved } from "./runtime-tuning.ts";
import { serviceEnv } from "./service-env.ts";
import { exitStatus, exitsWithin, running, spawnService, type ServiceProcess } from "./service-process.ts";

type Forwarded = "SIGTERM" | "SIGINT";

/** How long the service's start waits for the control plane's first config. */
const CONFIG_WAIT_MS = 10_000;
const SIGNAL_NUMBERS: Record<Forwarded, number> = { SIGINT: 2, SIGTERM: 15 };

export const runCommand: CommandSpec = {
  name: "run",
  summary: "Start a service and its sidecar together; the sidecar drains when the service exits.",
  description:
    "Takes every 'mesh proxy' flag, then the service's command after --. The command starts once the\n" +
    "sidecar is ready (with --control-plane, once its first config is in, or after 10 s without it), with\n" +
    "stdio inherited, HTTP_PROXY/http_proxy set to the outbound listener, NO_PROXY to loopback, and\n" +
    "MESH_SERVICE, MESH_OUTBOUND, MESH_ADMIN, and MESH_TCP_<SERVICE>_<PORT> (host:port) for each --tcp-upstream.\n" +
    "When it exits the sidecar drains and mesh run exits with its\n" +
    "code (128+N for signal N). On SIGTERM or SIGINT the sidecar stops taking inbound connections and\n" +
    "leaves discovery, then passes the signal to the command, which has the drain timeout to exit before\n" +
    "SIGKILL (its outbound calls are served until then); then the sidecar drains. A command that cannot\n" +
    "be started exits 127 (not found) or 126.",
  flags: proxyCommand.flags,
  examples: [
    "mesh run --service report --upstream http://127.0.0.1:8080 --config proxy.yaml -- bun report.ts --day today",
    "mesh run --service orders --upstream http://127.0.0.1:8080 --certs-dir certs/orders -- ./orders --port 8080",
  ],
  async run(args, ctx) {
    const argv = args.passthrough;
    if (!argv.length) throw new UsageError("no command: give the service's command after --, e.g. mesh run --service NAME … -- CMD ARGS…", ctx.path);
    const sidecar = await startProxyFromArgs(args, ctx);
    const signal = await configuredOrLate(sidecar, ctx);
    if (signal) {
      ctx.log.info({ signal }, "stopped before the service started");
      await drain(sidecar, ctx);
      return 128 + SIGNAL_NUMBERS[signal];
    }
    const env = serviceEnv(runtimeTuningRemoved(process.env), {
      service: sidecar.service,
      outbound: { address: sidecar.addresses.outbound, port: sidecar.proxy.ports.outbound },
      admin: { address: sidecar.addresses.admin, port: sidecar.proxy.ports.admin },
      tcp: sidecar.tcpUpstreams.map((u, i) => ({ service: u.service, port: u.port, address: u.bind.address, boundPort: sidecar.proxy.ports.tcp![i]! })),
    });
    const child = spawnService(argv, env);
    if (!("pid" in child)) {
      ctx.err(`error: ${child.message}`);
      await drain(sidecar, ctx);
      return child.code;
    }
    ctx.log.info({ pid: child.pid, command: argv[0] }, "service started");
    return supervise(child, sidecar, ctx);
  },
};

/** Waits for the service (passing it our signals), then drains the sidecar; the service's status. */
async function supervise(child: ServiceProcess, sidecar: Sidecar, ctx: CommandContext): Promise<number> {
  let signalled: (signal: Forwarded) => void = () => undefined;
  const firstSignal = new Promise<Forwarded>((resolve) => (signalled = resolve));
  const off = onSignals((signal) => {
    // New callers are turned away (and go elsewhere) before the service hears it.
    sidecar.leave();
    // Every signal is passed on; one that arrives while draining has nothing left to stop.
    if (running(child)) child.kill(signal);
    signalled(signal);
  });
  try {
    const signal = await Promise.race([child.exited.then(() => undefined), firstSignal]);
    if (signal) {
      ctx.log.info({ signal, pid: child.pid }, "passed the signal to the service; waiting for it to exit");
      if (!(await exitsWithin(child, sidecar.drainTimeoutMs))) {
        ctx.log.warn({ pid: child.pid, timeoutMs: sidecar.drainTimeoutMs }, "service did not exit within the drain timeout; killing it");
        child.kill("SIGKILL");
        await child.exited;
      }
    }
    const status = exitStatus(child);
    ctx.log.info({ status, signal: child.signalCode ?? undefined }, "service exited");
    await drain(sidecar, ctx);
    return status;
  } finally {
    off();
  }
}

/**
 * A service's first calls need the destinations the control plane sends: it starts once
 * they are in, or after CONFIG_WAIT_MS without them (the control plane may be down; the
 * sidecar serves on what it has and keeps trying). A signal meanwhile ends the wait: the
 * service is not started. Returns that signal, if one came.
 */
async function configuredOrLate(sidecar: Sidecar, ctx: CommandContext): Promise<Forwarded | undefined> {
  let timer: Timer | undefined;
  let onSignal: ((signal: Forwarded) => void) | undefined;
  const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), CONFIG_WAIT_MS)));
  const signalled = new Promise<Forwarded>((resolve) => (onSignal = resolve));
  const off = onSignals((signal) => onSignal?.(signal));
  try {
    const outcome = await Promise.race([sidecar.configured.then(() => "configured" as const), late, signalled]);
    if (outcome === "late") ctx.log.warn({ waitedMs: CONFIG_WAIT_MS }, "no config from the control plane yet; starting the service without it");
    return outcome === "late" || outcome === "configured" ? undefined : outcome;
  } finally {
    clearTimeout(timer);
    off();
  }
}

/** Calls `handler` on SIGTERM and SIGINT until the returned function removes it. */
function onSignals(handler: (signal: Forwarded) => void): () => void {
  const removers = (["SIGTERM", "SIGINT"] as const).map((signal) => {
    const listener = () => handler(signal);
    process.on(signal, listener);
    return () => process.off(signal, listener);
  });
  return () => {
    for (const remove of removers) remove();
  };
}

async function drain(sidecar: Sidecar, ctx: CommandContext): Promise<void> {
  ctx.log.info("draining");
  // The service has exited (or never started): nothing is left to call out.
  if (!(await sidecar.stop(true))) ctx.log.warn("the sidecar's drain ended with requests still in flight");
}
