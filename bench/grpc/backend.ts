/** Starts the gRPC-shaped service (service.ts) in its own process, and reads what it saw. */
import { join } from "node:path";
import { spawn, waitForLine, type Child } from "../procs.ts";
import type { ServiceStats } from "./service.ts";

export interface GrpcService {
  child: Child;
  /** The h2c listener. */
  port: number;
  /** Calls answered and refused so far, and the :authority and x-mesh-client-id values seen. */
  stats(): Promise<ServiceStats>;
}

export async function startGrpcService(label: string): Promise<GrpcService> {
  const child = spawn(label, [process.execPath, join(import.meta.dir, "service.ts")]);
  const line = await waitForLine(child, (l) => l.includes('"ready"'), 10_000);
  const ready = JSON.parse(line) as { port: number; statsPort: number };
  const stats = async () => (await (await fetch(`http://127.0.0.1:${ready.statsPort}/`, { signal: AbortSignal.timeout(3000) })).json()) as ServiceStats;
  return { child, port: ready.port, stats };
}
