/**
 * Engine settings for a sidecar. JavaScriptCore reads its options from the environment
 * once, as the process starts, and a compiled binary cannot set them for itself; so a
 * sidecar re-executes itself once with them (execve: same pid, same stdio, nothing
 * started yet) and goes on in the tuned process. Measured side by side with the nginx
 * pair at 32 connections (bench/README.md): peak RSS per proxy 84-88 -> 70-72 MB at the
 * same throughput, and eden GC pauses 0.9 -> 0.7 ms.
 *
 * A variable the user set keeps the user's value, and MESH_RUNTIME_TUNING=off skips
 * the re-exec. What was added is listed in MESH_RUNTIME_TUNED, so `mesh run` can give
 * its service the environment the user gave mesh (runtimeTuningRemoved).
 */

/** What the sidecar runs with, and why. */
export const SIDECAR_RUNTIME: Readonly<Record<string, string>> = {
  // JSC grows its heap in proportion to the machine's RAM: on a 24 GB host a sidecar's
  // heap ran to ~40 MB between collections for a ~6 MB live set. Sized as if on a small
  // machine it collects sooner; 128 MB cost no throughput, 64 MB cost a third of it.
  BUN_JSC_forceRAMSize: String(128 * 1024 * 1024),
  // One marking thread: the live heap is a few MB, and on a busy host a second marker
  // waits for a core while every request waits for the pause to end.
  BUN_JSC_numberOfGCMarkers: "1",
};

/** Set in the tuned process: the variables the re-exec added, comma-separated (may be empty). */
export const TUNED_MARKER = "MESH_RUNTIME_TUNED";
export const OPT_OUT = "MESH_RUNTIME_TUNING";

type Env = Record<string, string | undefined>;

export interface Reexec {
  file: string;
  args: string[];
  env: Record<string, string>;
}

/**
 * The command line that restarts this process tuned, or undefined when it must not:
 * already tuned, opted out, or nothing to add. `argv` and `execArgv` are the process's;
 * a compiled binary's argv[1] is its embedded entry point ("/$bunfs/…"), not an argument.
 */
export function tunedReexec(execPath: string, argv: readonly string[], execArgv: readonly string[], env: Env): Reexec | undefined {
  if (env[TUNED_MARKER] !== undefined || env[OPT_OUT] === "off") return undefined;
  const added = Object.keys(SIDECAR_RUNTIME).filter((name) => env[name] === undefined);
  const next: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) next[k] = v;
  for (const name of added) next[name] = SIDECAR_RUNTIME[name]!;
  next[TUNED_MARKER] = added.join(",");
  const compiled = argv[1]?.startsWith("/$bunfs/") ?? false;
  const args = compiled ? [execPath, ...argv.slice(2)] : [execPath, ...execArgv, ...argv.slice(1)];
  return { file: execPath, args, env: next };
}

/** Restarts this process tuned when it should; returns only if it does not (or cannot). */
export function reexecTuned(onFailure: (why: string) => void): void {
  const execve = (process as { execve?: (file: string, args: string[], env: Record<string, string>) => never }).execve;
  if (typeof execve !== "function" || process.platform === "win32") return;
  const plan = tunedReexec(process.execPath, process.argv, process.execArgv, process.env);
  if (!plan) return;
  try {
    execve(plan.file, plan.args, plan.env);
  } catch (err) {
    // The binary may have been replaced or removed since it started: run untuned rather than not at all.
    onFailure(err instanceof Error ? err.message : String(err));
  }
}

/** `env` without what the re-exec added: the environment the user gave mesh. */
export function runtimeTuningRemoved(env: Env): Env {
  const added = env[TUNED_MARKER];
  if (added === undefined) return env;
  const out: Env = { ...env };
  delete out[TUNED_MARKER];
  for (const name of added.split(",")) if (name) delete out[name];
  return out;
}
