/**
 * `mesh run`: a service and its sidecar as one unit. The sidecar starts first, exactly as
 * `mesh proxy` would; the service starts once the sidecar is ready; when the service ends
 * the sidecar drains, so a batch job's process ends too. On SIGTERM the sidecar leaves
 * discovery and stops taking inbound connections before the service hears the signal, so
 * callers go elsewhere while it finishes; its outbound calls are served until it exits.
 */
import { UsageError } from "../core/errors.ts";
import type { CommandContext, CommandSpec } from "./args.ts";
import { exitOnceStopped, proxyCommand, startProxyFromArgs, type Sidecar } from "./proxy.ts";
import { runtimeTuningRemoved } from "./runtime-tuning.ts";
import { serviceEnv } from "./service-env.ts";
import { exitStatus, exitsWithin, groupGoneWithin, running, signalService, spawnService, type ServiceProcess } from "./service-process.ts";
import { RunSignals, SIGNAL_NUMBERS, type Forwarded } from "./run-signals.ts";

/** How long the service's start waits for the control plane's first config. */
const CONFIG_WAIT_MS = 10_000;
/** How long mesh run waits, after its SIGKILL, for every process of the service's group to be gone (reaped). */
const KILLED_GROUP_WAIT_MS = 5_000;

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
    "SIGKILL (its outbound calls are served until then); then the sidecar drains. The command runs in a\n" +
    "process group (and session) of its own, and signals go to the whole group: its own children too.\n" +
    "A command that cannot be started exits 127 (not found) or 126.",
  flags: proxyCommand.flags,
  passthrough: true,
  examples: [
    "mesh run --service report --upstream http://127.0.0.1:8080 --config proxy.yaml -- bun report.ts --day today",
    "mesh run --service orders --upstream http://127.0.0.1:8080 --certs-dir certs/orders -- ./orders --port 8080",
  ],
  async run(args, ctx) {
    const argv = args.passthrough;
    if (!argv.length) throw new UsageError("no command: give the service's command after --, e.g. mesh run --service NAME … -- CMD ARGS…", ctx.path);
    const sidecar = await startProxyFromArgs(args, ctx);
    return exitOnceStopped(sidecar, await runService(argv, sidecar, new RunSignals(), ctx));
  },
};

/** The service, from its start (once the sidecar has its config) to its end, and the sidecar's drain; the exit code. */
async function runService(argv: string[], sidecar: Sidecar, signals: RunSignals, ctx: CommandContext): Promise<number> {
  const signal = await configuredOrLate(sidecar, signals, ctx);
  if (signal) {
    ctx.log.info({ signal }, "stopped before the service started");
    await drain(sidecar, signals, ctx);
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
    await drain(sidecar, signals, ctx);
    return child.code;
  }
  ctx.log.info({ pid: child.pid, command: argv[0] }, "service started");
  return supervise(child, sidecar, signals, ctx);
}

/** Waits for the service (passing it our signals), then drains the sidecar; the service's status. */
async function supervise(child: ServiceProcess, sidecar: Sidecar, signals: RunSignals, ctx: CommandContext): Promise<number> {
  let signalled: (signal: Forwarded) => void = () => undefined;
  const firstSignal = new Promise<Forwarded>((resolve) => (signalled = resolve));
  signals.handle((signal) => {
    // New callers are turned away (and go elsewhere) before the service hears it.
    sidecar.leave();
    // Every signal is passed on, to the service's whole process group; one that arrives while draining has nothing left to stop.
    if (running(child)) signalService(child, signal);
    signalled(signal);
  });
  const signal = await Promise.race([child.exited.then(() => undefined), firstSignal]);
  let killed: Promise<boolean> | undefined;
  if (signal) {
    ctx.log.info({ signal, pid: child.pid }, "passed the signal to the service; waiting for it to exit");
    if (!(await exitsWithin(child, sidecar.drainTimeoutMs))) {
      ctx.log.warn({ pid: child.pid, timeoutMs: sidecar.drainTimeoutMs }, "service did not exit within the drain timeout; killing it");
      // The whole group: the service's own children (workers, the program behind a shell) go with it.
      signalService(child, "SIGKILL");
      await child.exited;
      killed = groupGoneWithin(child, KILLED_GROUP_WAIT_MS);
    }
  }
  const status = exitStatus(child);
  ctx.log.info({ status, signal: child.signalCode ?? undefined }, "service exited");
  await drain(sidecar, signals, ctx);
  // Orphans of the killed group are reaped by init: mesh run ends once none is left, so its end means the service's.
  if (killed && !(await killed)) ctx.log.warn({ pgid: child.pid, waitedMs: KILLED_GROUP_WAIT_MS }, "processes of the killed service's group are still there");
  return status;
}

/**
 * A service's first calls need the destinations the control plane sends: it starts once
 * they are in, or after CONFIG_WAIT_MS without them (the control plane may be down; the
 * sidecar serves on what it has and keeps trying). A signal meanwhile ends the wait: the
 * service is not started. Returns that signal, if one came.
 */
async function configuredOrLate(sidecar: Sidecar, signals: RunSignals, ctx: CommandContext): Promise<Forwarded | undefined> {
  let timer: Timer | undefined;
  const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), CONFIG_WAIT_MS)));
  const signalled = new Promise<Forwarded>((resolve) => signals.handle(resolve));
  try {
    const outcome = await Promise.race([sidecar.configured.then(() => "configured" as const), late, signalled]);
    if (outcome === "late") ctx.log.warn({ waitedMs: CONFIG_WAIT_MS }, "no config from the control plane yet; starting the service without it");
    return outcome === "late" || outcome === "configured" ? undefined : outcome;
  } finally {
    clearTimeout(timer);
    // Until the service is supervised (or the sidecar drains without it), a signal waits.
    signals.hold();
  }
}

/** The sidecar's drain, once the service is gone (or never started): a signal now does not cut it, it is logged. */
async function drain(sidecar: Sidecar, signals: RunSignals, ctx: CommandContext): Promise<void> {
  signals.handle((signal) => ctx.log.info({ signal }, "a signal while the sidecar drains: it goes on as it was"));
  ctx.log.info("draining");
  // The service has exited (or never started): nothing is left to call out.
  if (!(await sidecar.stop(true))) ctx.log.warn("the sidecar's drain ended with requests still in flight");
}
