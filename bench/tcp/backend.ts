/** Starts the echo service (echo.ts) in its own process: one per topology. */
import { join } from "node:path";
import { spawn, waitForLine, type Child } from "../procs.ts";

export interface EchoService {
  child: Child;
  port: number;
}

export async function startEcho(label: string): Promise<EchoService> {
  const child = spawn(label, [process.execPath, join(import.meta.dir, "echo.ts")]);
  const line = await waitForLine(child, (l) => l.includes('"ready"'), 10_000);
  return { child, port: (JSON.parse(line) as { port: number }).port };
}
