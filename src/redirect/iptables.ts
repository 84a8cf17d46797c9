/**
 * Installs and removes the redirect rules (rules.ts) in this network namespace with the
 * system's iptables tools. Applying is one iptables-restore transaction per family;
 * removing deletes the hook from OUTPUT and the two chains, and nothing else.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, rmdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MeshError } from "../core/errors.ts";
import { HOOK, OUTPUT_CHAIN, REDIRECT_CHAIN, restoreInput, type Family, type RedirectPlan } from "./rules.ts";

const TOOL: Record<Family, string> = { 4: "iptables", 6: "ip6tables" };

function run(command: string, args: string[], input?: string): { ok: boolean; stdout: string; stderr: string } {
  const r = spawnSync(command, args, { input, encoding: "utf8" });
  if (r.error && (r.error as NodeJS.ErrnoException).code === "ENOENT")
    throw new MeshError(`${command} not found: install iptables (Debian and Ubuntu: apt-get install iptables), and run this as root or with CAP_NET_ADMIN`);
  if (r.error) throw new MeshError(`${command}: ${r.error.message}`);
  return { ok: r.status === 0, stdout: r.stdout, stderr: r.stderr.trim() };
}

/** Held while rules are read and changed, so runs at once do not both add the hook. */
const LOCK = join(tmpdir(), "mesh-redirect.lock");
/** A lock older than this was left by a run that died: taken over. */
const STALE_LOCK_MS = 30_000;
const LOCK_WAIT_MS = 10_000;

/** Runs `fn` holding the lock (a directory: mkdir is atomic), waiting up to 10 s for another run to finish. */
export function exclusively<T>(fn: () => T): T {
  const giveUpAt = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      mkdirSync(LOCK);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw new MeshError(`cannot take the lock ${LOCK}: ${(err as Error).message}`);
      const age = Date.now() - (statSync(LOCK, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > STALE_LOCK_MS) dropStaleLock();
      else if (Date.now() > giveUpAt) throw new MeshError(`another mesh redirect holds ${LOCK}; remove it if no such run is going on`);
      else Bun.sleepSync(20);
    }
  }
  try {
    return fn();
  } finally {
    rmdirSync(LOCK);
  }
}

/** Another run may take the stale lock over first: then there is nothing to drop. */
function dropStaleLock(): void {
  try {
    rmdirSync(LOCK);
  } catch {
    // Gone already.
  }
}

/** The nat table's rules of `family`, as `iptables -S` prints them. */
function natRules(family: Family): string[] {
  const r = run(TOOL[family], ["-w", "-t", "nat", "-S"]);
  if (!r.ok) throw new MeshError(`${TOOL[family]} -t nat -S: ${r.stderr || "failed"}`);
  return r.stdout.split("\n");
}

/** Installs `plan`'s rules for `family`, replacing any earlier ones; false when it redirects nothing of this family (earlier rules removed). */
export function applyRedirect(plan: RedirectPlan, family: Family): boolean {
  const input = restoreInput(plan, family, natRules(family).includes(HOOK));
  if (input === undefined) {
    removeRedirect(family);
    return false;
  }
  const r = run(`${TOOL[family]}-restore`, ["-w", "--noflush"], input);
  if (!r.ok) throw new MeshError(`${TOOL[family]}-restore refused the rules: ${r.stderr || "failed"}`);
  return true;
}

/** Removes the hook and both chains; whether there was anything to remove. */
export function removeRedirect(family: Family): boolean {
  const rules = natRules(family);
  const tool = TOOL[family];
  const must = (...args: string[]) => {
    const r = run(tool, ["-w", "-t", "nat", ...args]);
    if (!r.ok) throw new MeshError(`${tool} -t nat ${args.join(" ")}: ${r.stderr || "failed"}`);
  };
  let removed = false;
  for (const rule of rules)
    if (rule === HOOK) {
      must("-D", ...HOOK.split(" ").slice(1));
      removed = true;
    }
  for (const chain of [OUTPUT_CHAIN, REDIRECT_CHAIN])
    if (rules.includes(`-N ${chain}`)) {
      must("-F", chain);
      removed = true;
    }
  for (const chain of [OUTPUT_CHAIN, REDIRECT_CHAIN]) if (rules.includes(`-N ${chain}`)) must("-X", chain);
  return removed;
}
