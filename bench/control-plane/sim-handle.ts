/** The coordinator's side of a simulator process: start it (by pid, via bench/procs.ts) and call its control port. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawn, waitForLine, type Child } from "../procs.ts";
import type { SimConfig, SimStatus, SimTimes } from "./sim-protocol.ts";

/** Bun's fetch runs at most 256 requests at once per process unless told otherwise; 65535 is its ceiling. */
const MAX_HTTP_REQUESTS = "65535";

export interface Simulator {
  child: Child;
  proxies: number;
  register(): Promise<SimStatus>;
  subscribe(): Promise<void>;
  status(since: number): Promise<SimStatus>;
  times(version: string): Promise<SimTimes>;
}

export async function startSimulator(index: number, dir: string, config: SimConfig): Promise<Simulator> {
  const file = join(dir, `sim-${index}.json`);
  writeFileSync(file, JSON.stringify(config), { mode: 0o600 }); // holds join tokens
  // `env` execs bun in place, so the pid tracked is the simulator's own.
  const child = spawn(`simulator-${index}`, ["env", `BUN_CONFIG_MAX_HTTP_REQUESTS=${MAX_HTTP_REQUESTS}`, process.execPath, join(import.meta.dir, "simulator.ts"), file]);
  const line = await waitForLine(child, (l) => l.startsWith("{") && l.includes('"ready"'), 60_000);
  const base = `http://127.0.0.1:${(JSON.parse(line) as { port: number }).port}`;
  const call = async <T>(method: string, path: string, timeoutMs = 10_000): Promise<T> => {
    const res = await fetch(base + path, { method, signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) throw new Error(`simulator-${index} ${method} ${path}: ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  };
  return {
    child,
    proxies: config.proxies.length,
    register: () => call<SimStatus>("POST", "/register", 300_000),
    subscribe: () => call<{ ok: boolean }>("POST", "/subscribe").then(() => undefined),
    status: (since) => call<SimStatus>("GET", `/status?since=${since}`),
    times: (version) => call<SimTimes>("GET", `/times?version=${encodeURIComponent(version)}`),
  };
}
