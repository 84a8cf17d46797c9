#!/usr/bin/env bun
/**
 * The `mesh` binary: argv → subcommand table, nothing else. Commands of other roles
 * load when chosen (`load`), so a sidecar never evaluates the CA's or the control
 * plane's libraries: each costs it resident memory and GC time for nothing. A sidecar
 * restarts itself once with its engine settings first (runtime-tuning.ts).
 */
// Must be evaluated before @peculiar/x509 (tsyringe checks for it), even when that loads later.
import "reflect-metadata";
import { globalFlagWords, type CommandSpec } from "./cli/args.ts";
import { UsageError } from "./core/errors.ts";
import { demoCommand } from "./cli/demo.ts";
import { proxyCommand } from "./cli/proxy.ts";
import { runCli } from "./cli/run.ts";
import { runCommand } from "./cli/run-service.ts";
import { reexecTuned } from "./cli/runtime-tuning.ts";
import { validateCommand } from "./cli/validate.ts";
import { versionCommand } from "./cli/version.ts";
import { waitReadyCommand } from "./cli/wait-ready.ts";

const lazy = (name: string, summary: string, load: () => Promise<CommandSpec>): CommandSpec => ({ name, summary, load });
const manifests = () => import("./cli/manifests.ts");

export const rootCommand: CommandSpec = {
  name: "mesh",
  summary: "A service mesh in one binary: mutual TLS with SPIFFE identities, routing and resilience for every service.",
  subcommands: [
    proxyCommand,
    runCommand,
    lazy("control-plane", "Run the control plane: registry, config distribution, policy store and certificate signing.", async () => (await import("./cli/control-plane.ts")).controlPlaneCommand),
    lazy("apply", "Validate manifests and store them in the control plane: all of them, or none.", async () => (await manifests()).applyCommand),
    lazy("get", "Show manifests stored in the control plane, as JSON.", async () => (await manifests()).getCommand),
    lazy("delete", "Remove a manifest from the control plane.", async () => (await manifests()).deleteCommand),
    lazy("join-token", "Make, list and revoke the join tokens new sidecars trade for their first certificate.", async () => (await import("./cli/join-token.ts")).joinTokenCommand),
    lazy("redirect", "Send this network namespace's outbound calls to the sidecar's outbound listener (iptables), so services need no HTTP_PROXY.", async () => (await import("./cli/redirect.ts")).redirectCommand),
    lazy("check", "Check the mesh: control plane, CA and certificates, proxies on the latest config, rejections.", async () => (await import("./cli/check.ts")).checkCommand),
    lazy("ca", "The certificate authority: create it, issue and sign workload certificates, inspect, rotate.", async () => (await import("./cli/ca/index.ts")).caCommand),
    waitReadyCommand,
    validateCommand,
    demoCommand,
    versionCommand,
  ],
  flags: [{ name: "version", type: "boolean", description: "Print the version, as `mesh version` does." }],
  // Reached only without a command: `mesh --version`, or nothing to run (usage, exit 64).
  async run(args, ctx) {
    if (args.flags.version) return versionCommand.run!(args, ctx);
    throw new UsageError("no command given", "mesh");
  },
};

/** Commands that run a sidecar in this process. */
const SIDECARS = new Set(["proxy", "run"]);

/** The command argv names, past global flags before it (`mesh --log-level debug proxy …`). */
function commandName(argv: string[]): string | undefined {
  let i = 0;
  for (let words = 0; i < argv.length && (words = globalFlagWords(argv, i)); i += words);
  return argv[i];
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  if (SIDECARS.has(commandName(argv) ?? "")) reexecTuned((why) => process.stderr.write(`mesh: warning: running with default engine settings (${why})\n`));
  const code = await runCli(rootCommand, argv);
  // A command that failed part-way may hold listeners it bound before the failure: they must not keep it alive.
  if (code !== 0) process.exit(code);
  process.exitCode = code;
}
