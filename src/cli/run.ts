/**
 * Finds the command an argv names, parses its flags, runs it, and turns every error
 * into a message and an exit code — in this one place.
 */
import { EXIT, MeshError, UsageError, errorMessage, exitCodeFor } from "../core/errors.ts";
import { LOG_LEVELS, createLogger, type LogLevel } from "../core/log.ts";
import { globalFlagWords, parseArgs, str, type CommandContext, type CommandSpec } from "./args.ts";
import { renderHelp } from "./help.ts";

export interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
}

/**
 * Writes lines to stdout or stderr. When the reader goes away (`mesh … | head -1`), the rest
 * is dropped quietly, as CLIs do on a closed pipe, and the command keeps its own end and
 * status, instead of dying of an unhandled EPIPE with a stack trace.
 */
function lineWriter(stream: NodeJS.WriteStream, name: string): (line: string) => void {
  let closed = false;
  const failed = (err: unknown) => {
    if (closed) return;
    closed = true;
    if ((err as NodeJS.ErrnoException | undefined)?.code === "EPIPE") return;
    // Output lost another way (a full disk, an I/O error): not quiet. Stderr's own failure cannot be told.
    process.exitCode = EXIT.failure;
    if (stream !== process.stderr) processIo.err(`mesh: cannot write to ${name}: ${errorMessage(err)}`);
  };
  // A failed write is reported as an 'error' event after it returns, not thrown.
  stream.on("error", failed);
  return (line) => {
    if (closed) return;
    try {
      stream.write(line + "\n");
    } catch (err) {
      failed(err);
    }
  };
}

export const processIo: Io = { out: lineWriter(process.stdout, "stdout"), err: lineWriter(process.stderr, "stderr") };

/**
 * Walks subcommands: `mesh ca issue --x` → (ca issue spec, ["--x"], "mesh ca issue").
 * Global flags met on the way (`mesh --log-level debug version`) go to the command found.
 */
async function resolve(root: CommandSpec, argv: string[]): Promise<{ spec: CommandSpec; rest: string[]; path: string }> {
  let spec = root;
  let path = root.name;
  let i = 0;
  const global: string[] = [];
  while (spec.subcommands?.length && i < argv.length) {
    const words = globalFlagWords(argv, i);
    if (words) {
      global.push(...argv.slice(i, i + words));
      i += words;
      continue;
    }
    if (argv[i]!.startsWith("-")) break;
    const name = argv[i]!;
    const next = spec.subcommands.find((s) => s.name === name);
    if (!next) throw Object.assign(new UsageError(`unknown command "${name}"`, path), { spec, path });
    spec = next.load ? await next.load() : next;
    path = `${path} ${name}`;
    i++;
  }
  // Before the rest, so they stay flags should the rest hold `--`.
  return { spec, rest: [...global, ...argv.slice(i)], path };
}

export async function runCli(root: CommandSpec, argv: string[], io: Io = processIo): Promise<number> {
  let spec = root;
  let path = root.name;
  try {
    const resolved = await resolve(root, argv);
    ({ spec, path } = resolved);
    const args = parseArgs(spec, resolved.rest, path);
    if (args.flags.help) {
      io.out(renderHelp(spec, path));
      return EXIT.ok;
    }
    const level = str(args, "log-level");
    if (level && !(LOG_LEVELS as readonly string[]).includes(level))
      throw new UsageError(`"${level}" is not one of ${LOG_LEVELS.join(", ")}`, "--log-level");
    if (!spec.run) {
      io.err(renderHelp(spec, path));
      return EXIT.usage;
    }
    const log = createLogger({ level: (level ?? "info") as LogLevel, role: spec.name });
    log.debug({ command: path, pid: process.pid }, "starting");
    const ctx: CommandContext = { out: io.out, err: io.err, path, log };
    return await spec.run(args, ctx);
  } catch (err) {
    const failed = err as Partial<{ spec: CommandSpec; path: string }>;
    if (err instanceof UsageError) {
      io.err(`error: ${err.message}`);
      io.err("");
      io.err(renderHelp(failed.spec ?? spec, failed.path ?? path));
    } else if (err instanceof MeshError) {
      io.err(`error: ${err.message}`);
    } else {
      io.err(`error: ${errorMessage(err)}`);
      if (process.env.MESH_DEBUG) io.err(String((err as Error)?.stack ?? ""));
    }
    return exitCodeFor(err);
  }
}
