#!/usr/bin/env bun
/** The `mesh` binary: argv → subcommand table, nothing else. */
import type { CommandSpec } from "./cli/args.ts";
import { caCommand } from "./cli/ca/index.ts";
import { checkCommand } from "./cli/check.ts";
import { controlPlaneCommand } from "./cli/control-plane.ts";
import { demoCommand } from "./cli/demo.ts";
import { applyCommand, deleteCommand, getCommand, joinTokenCommand } from "./cli/manifests.ts";
import { proxyCommand } from "./cli/proxy.ts";
import { runCli } from "./cli/run.ts";
import { runCommand } from "./cli/run-service.ts";
import { validateCommand } from "./cli/validate.ts";
import { versionCommand } from "./cli/version.ts";

export const rootCommand: CommandSpec = {
  name: "mesh",
  summary: "A service mesh in one binary: mutual TLS with SPIFFE identities, routing and resilience for every service.",
  subcommands: [proxyCommand, runCommand, controlPlaneCommand, applyCommand, getCommand, deleteCommand, joinTokenCommand, checkCommand, caCommand, validateCommand, demoCommand, versionCommand],
};

if (import.meta.main) {
  const code = await runCli(rootCommand, process.argv.slice(2));
  process.exitCode = code;
}
