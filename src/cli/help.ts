/** Help text, rendered from the same CommandSpec the parser uses. */
import { COMMON_FLAGS, type CommandSpec, type FlagSpec } from "./args.ts";

function flagLabel(f: FlagSpec): string {
  const short = f.short ? `-${f.short}, ` : "    ";
  const value = f.type === "boolean" ? "" : ` ${f.value ?? "VALUE"}`;
  return `${short}--${f.name}${value}`;
}

function flagLines(flags: FlagSpec[]): string[] {
  const labels = flags.map(flagLabel);
  const width = Math.max(...labels.map((l) => l.length)) + 2;
  return flags.map((f, i) => {
    const extra = [
      f.required ? "required" : "",
      f.default !== undefined && f.type !== "boolean" ? `default: ${f.default}` : "",
      f.type === "strings" ? "repeatable" : "",
    ].filter(Boolean);
    return `  ${labels[i]!.padEnd(width)}${f.description}${extra.length ? ` (${extra.join("; ")})` : ""}`;
  });
}

export function renderHelp(spec: CommandSpec, path: string): string {
  const lines: string[] = [];
  const pos = (spec.positionals ?? []).map((p) => (p.required ? p.name : `[${p.name}]`) + (p.rest ? " …" : ""));
  const sub = spec.subcommands?.length ? " <command>" : "";
  const rest = spec.passthrough ? " -- COMMAND [ARGS…]" : "";
  lines.push(`Usage: ${path}${sub}${spec.flags?.length || !sub ? " [flags]" : ""}${pos.length ? " " + pos.join(" ") : ""}${rest}`);
  lines.push("", spec.summary);
  if (spec.description) lines.push("", spec.description);
  if (spec.subcommands?.length) {
    lines.push("", "Commands:");
    const width = Math.max(...spec.subcommands.map((s) => s.name.length)) + 2;
    for (const s of spec.subcommands) lines.push(`  ${s.name.padEnd(width)}${s.summary}`);
  }
  if (spec.positionals?.length) {
    lines.push("", "Arguments:");
    const width = Math.max(...spec.positionals.map((p) => p.name.length)) + 2;
    for (const p of spec.positionals) lines.push(`  ${p.name.padEnd(width)}${p.description}`);
  }
  if (spec.flags?.length) lines.push("", "Flags:", ...flagLines(spec.flags));
  lines.push("", "Global flags:", ...flagLines(COMMON_FLAGS));
  if (spec.examples?.length) lines.push("", "Examples:", ...spec.examples.map((e) => `  ${e}`));
  if (spec.subcommands?.length) lines.push("", `Run '${path} <command> --help' for a command's flags.`);
  return lines.join("\n");
}
