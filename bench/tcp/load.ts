/**
 * Runs the load client (client.ts) once, as its own process, bounded in time, and calls
 * back at the edges of its measured window as it prints them (the watcher of
 * bench/grpc/load.ts), so the proxies' CPU is read over exactly what the client counted.
 */
import { join } from "node:path";
import { watchWindow, type Window } from "../grpc/load.ts";
import { runToEnd, spawn, tail } from "../procs.ts";
import { WINDOW_END, WINDOW_START, type ClientResult } from "./wire.ts";

/** One measured load: round trips on C connections, or bulk transfers of B bytes each. */
export type Load = { kind: "rr"; connections: number } | { kind: "bulk"; bytes: number };

export const loadName = (l: Load) => (l.kind === "rr" ? `rr c${l.connections}` : `bulk ${l.bytes / 2 ** 20} MiB`);

/** A hung client is killed this long after its warm-up and duration (a bulk transfer may take up to its own timeout). */
const OVERSTAY_S = 60;

export function clientArgs(port: number, load: Load, timing: { warmupS: number; durationS: number }): string[] {
  const shape = load.kind === "rr" ? ["rr", "--connections", String(load.connections)] : ["bulk", "--bytes", String(load.bytes)];
  return [process.execPath, join(import.meta.dir, "client.ts"), ...shape, "--port", String(port), "--warmup-ms", String(timing.warmupS * 1000), "--duration-ms", String(timing.durationS * 1000)];
}

export async function runClient(port: number, load: Load, timing: { warmupS: number; durationS: number }, window: Window): Promise<ClientResult> {
  const child = spawn(`tcp client ${loadName(load)}`, clientArgs(port, load, timing));
  const watching = watchWindow(child, window, { start: WINDOW_START, end: WINDOW_END });
  const code = await runToEnd(child, (timing.warmupS + timing.durationS + OVERSTAY_S) * 1000);
  await Promise.all([watching, child.drained]);
  const out = child.stdout();
  if (code !== 0) throw new Error(`the load client exited ${code}: ${tail(child.stderr() || out)}`);
  const line = out.split("\n").find((l) => l.startsWith('{"result"'));
  if (!line) throw new Error(`the load client printed no result:\n${tail(out + child.stderr())}`);
  return (JSON.parse(line) as { result: ClientResult }).result;
}
