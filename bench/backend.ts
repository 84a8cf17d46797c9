/** Starts the 100-byte service (bench/service.ts) in its own process. */
import { join } from "node:path";
import { spawn, waitForLine, type Child } from "./procs.ts";

export async function startService(): Promise<{ child: Child; port: number }> {
  const child = spawn("service", [process.execPath, join(import.meta.dir, "service.ts")]);
  const line = await waitForLine(child, (l) => l.includes('"ready"'), 10_000);
  return { child, port: (JSON.parse(line) as { port: number }).port };
}
