/**
 * A small declarative command-line parser. Each command declares its flags once;
 * parsing, validation and the help text all come from that declaration, so help
 * cannot drift from behaviour.
 */
import { UsageError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";

export type FlagType = "string" | "boolean" | "strings";

export interface FlagSpec {
  name: string;
  short?: string;
  type: FlagType;
  description: string;
  /** Shown in help as `--name VALUE`. */
  value?: string;
  default?: string | boolean;
  required?: boolean;
}

export interface PositionalSpec {
  name: string;
  description: string;
  required?: boolean;
  /** Collects every remaining positional. */
  rest?: boolean;
}

export interface Parsed {
  flags: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  /** Everything after a bare `--`, untouched: only for a command that declares `passthrough`. */
  passthrough: string[];
  /** Flags given on the command line, as opposed to filled from their defaults. */
  given?: ReadonlySet<string>;
}

export interface CommandSpec {
  name: string;
  summary: string;
  description?: string;
  flags?: FlagSpec[];
  positionals?: PositionalSpec[];
  /**
   * Takes what follows a bare `--` untouched, as `passthrough` (mesh run: the service's
   * command). Otherwise `--` only ends the flags: what follows is positionals, refused when
   * the command takes none, so nothing typed there is dropped unread.
   */
  passthrough?: boolean;
  subcommands?: CommandSpec[];
  examples?: string[];
  run?: (args: Parsed, ctx: CommandContext) => Promise<number>;
  /**
   * The whole command, loaded only when it is chosen; the spec holding `load` carries
   * just `name` and `summary`. Keeps one role's libraries out of another role's process.
   */
  load?: () => Promise<CommandSpec>;
}

export interface CommandContext {
  out: (line: string) => void;
  err: (line: string) => void;
  /** The full command path, e.g. "mesh ca issue", for messages. */
  path: string;
  /** Structured logs on stderr, at the level --log-level chose. */
  log: Logger;
}

/** Flags every command accepts. */
export const COMMON_FLAGS: FlagSpec[] = [
  { name: "help", short: "h", type: "boolean", description: "Show help for this command." },
  {
    name: "log-level",
    type: "string",
    value: "LEVEL",
    default: "info",
    description: "Log threshold: trace, debug, info, warn, error, fatal or silent.",
  },
];

export function parseArgs(spec: CommandSpec, argv: string[], path: string): Parsed {
  const all = [...(spec.flags ?? []), ...COMMON_FLAGS];
  const byName = new Map(all.map((f) => [f.name, f]));
  const byShort = new Map(all.filter((f) => f.short).map((f) => [f.short!, f]));
  const flags: Parsed["flags"] = {};
  const positionals: string[] = [];
  let passthrough: string[] = [];

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      const after = argv.slice(i + 1);
      if (spec.passthrough) passthrough = after;
      else if (spec.positionals?.length) positionals.push(...after);
      else if (after.length) throw new UsageError(afterDashDashProblem(after), path);
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const long = arg.startsWith("--");
    const body = long ? arg.slice(2) : arg.slice(1);
    const eq = body.indexOf("=");
    const key = eq === -1 ? body : body.slice(0, eq);
    const flag = long ? byName.get(key) : byShort.get(key);
    if (!flag) throw new UsageError(`unknown flag ${long ? "--" : "-"}${key}`, path);
    let value: string | undefined = eq === -1 ? undefined : body.slice(eq + 1);
    if (flag.type === "boolean") {
      if (value !== undefined && value !== "true" && value !== "false")
        throw new UsageError(`--${flag.name} takes no value (got "${value}")`, path);
      flags[flag.name] = value !== "false";
      continue;
    }
    if (value === undefined) {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith("-") && next !== "-"))
        throw new UsageError(`--${flag.name} needs a value${flag.value ? ` (${flag.value})` : ""}`, path);
      value = next;
      i++;
    }
    // No flag takes "": an empty value (an unset shell variable, `--flag=`) would otherwise read as absent and mean the default.
    if (value === "") throw new UsageError(`--${flag.name} has an empty value${flag.value ? `; expected ${flag.value}` : ""}`, path);
    if (flag.type === "strings") flags[flag.name] = [...((flags[flag.name] as string[] | undefined) ?? []), value];
    else if (flags[flag.name] !== undefined) throw new UsageError(`--${flag.name} given more than once`, path);
    else flags[flag.name] = value;
  }

  if (flags.help) return { flags, positionals, passthrough };
  const given = new Set(Object.keys(flags));
  for (const f of all) {
    if (flags[f.name] === undefined && f.default !== undefined) flags[f.name] = f.default;
    if (f.required && flags[f.name] === undefined) throw new UsageError(`--${f.name} is required`, path);
  }
  const specs = spec.positionals ?? [];
  const takesRest = specs.some((p) => p.rest);
  if (!takesRest && positionals.length > specs.length)
    throw new UsageError(`unexpected argument "${positionals[specs.length]}"`, path);
  specs.forEach((p, idx) => {
    if (p.required && positionals[idx] === undefined) throw new UsageError(`missing ${p.name}`, path);
  });
  return { flags, positionals, passthrough, given };
}

/** Words after `--` of a command that takes none: flags misplaced, or a command meant for `mesh run`. */
function afterDashDashProblem(after: string[]): string {
  const hint = after[0]!.startsWith("-") ? "flags go before --" : "only 'mesh run' starts a command given after --";
  return `unexpected "${after.join(" ")}" after --: this command takes no arguments (${hint})`;
}

/**
 * How many words at argv[i] are a global flag (COMMON_FLAGS) with its value, or 0: lets
 * `mesh --log-level debug version` put them before the command, as after it.
 */
export function globalFlagWords(argv: readonly string[], i: number): number {
  const arg = argv[i]!;
  const long = arg.startsWith("--");
  const body = long ? arg.slice(2) : arg.startsWith("-") ? arg.slice(1) : undefined;
  if (body === undefined || body === "") return 0;
  const eq = body.indexOf("=");
  const key = eq === -1 ? body : body.slice(0, eq);
  const flag = COMMON_FLAGS.find((f) => (long ? f.name : f.short) === key);
  if (!flag) return 0;
  if (flag.type === "boolean" || eq !== -1) return 1;
  // A value that is missing or looks like a flag is left for parseArgs to refuse, naming the flag.
  const next = argv[i + 1];
  return next === undefined || (next.startsWith("-") && next !== "-") ? 0 : 2;
}

export function str(args: Parsed, name: string): string | undefined {
  const v = args.flags[name];
  return typeof v === "string" ? v : undefined;
}

export function bool(args: Parsed, name: string): boolean {
  return args.flags[name] === true;
}

export function strs(args: Parsed, name: string): string[] {
  const v = args.flags[name];
  return Array.isArray(v) ? v : [];
}
