/** The command reference: every (sub)command of a CommandSpec tree, from the same spec help uses. */
import { COMMON_FLAGS, type CommandSpec, type FlagSpec, type PositionalSpec } from "../cli/args.ts";
import { renderHelp } from "../cli/help.ts";
import { code, lines, table, text } from "./markdown.ts";

export interface CommandEntry {
  /** Full path, e.g. "mesh ca issue". */
  path: string;
  spec: CommandSpec;
}

/** The tree with every lazily loaded command (`load`) loaded: what the reference documents. */
export async function loadCommandTree(spec: CommandSpec): Promise<CommandSpec> {
  const full = spec.load ? await spec.load() : spec;
  if (!full.subcommands) return full;
  return { ...full, subcommands: await Promise.all(full.subcommands.map(loadCommandTree)) };
}

/** Every command, depth first in declared order, the root included. */
export function walkCommands(root: CommandSpec, path = root.name): CommandEntry[] {
  return [{ path, spec: root }, ...(root.subcommands ?? []).flatMap((s) => walkCommands(s, `${path} ${s.name}`))];
}

/** The usage line exactly as `--help` prints it. */
function usage(spec: CommandSpec, path: string): string {
  return renderHelp(spec, path).split("\n")[0]!.replace(/^Usage: /, "");
}

function flagRow(f: FlagSpec): string[] {
  const label = `${f.short ? `-${f.short}, ` : ""}--${f.name}${f.type === "boolean" ? "" : ` ${f.value ?? "VALUE"}`}`;
  const shown = f.default !== undefined && f.type !== "boolean" ? code(String(f.default), true) : "";
  const repeatable = f.type === "strings" ? " *(repeatable)*" : "";
  return [code(label, true), f.required ? "*required*" : shown, text(f.description) + repeatable];
}

function positionalRow(p: PositionalSpec): string[] {
  return [code(p.name + (p.rest ? " …" : ""), true), p.required ? "*required*" : "", text(p.description)];
}

function argumentTable(spec: CommandSpec, flags: FlagSpec[]): string[] {
  const rows = [...(spec.positionals ?? []).map(positionalRow), ...flags.map(flagRow)];
  return rows.length ? [table(["argument / flag", "default", "description"], rows)] : [];
}

export function renderCommand({ path, spec }: CommandEntry, isRoot: boolean): string {
  const parts = [`#### ${code(path)}`, `${code(usage(spec, path))} — ${text(spec.summary)}`];
  if (spec.description) parts.push(lines(spec.description));
  if (isRoot) parts.push("Global flags, accepted by every command:");
  parts.push(...argumentTable(spec, [...(spec.flags ?? []), ...(isRoot ? COMMON_FLAGS : [])]));
  if (spec.examples?.length) parts.push(["```sh", ...spec.examples, "```"].join("\n"));
  return parts.join("\n\n");
}

export function renderCommands(root: CommandSpec): string {
  return walkCommands(root)
    .map((entry) => renderCommand(entry, entry.spec === root))
    .join("\n\n");
}
