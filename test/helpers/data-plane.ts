/**
 * Pieces for the data-plane threat suites: a service that records exactly what reached
 * it (and whether each body arrived whole), a client certificate for speaking to an
 * inbound listener directly, and a process's resident memory.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { ClientTls } from "./raw-http.ts";
import type { MeshFixture } from "./mesh-fixture.ts";

export interface Seen {
  method: string;
  path: string;
  headers: Record<string, string>;
  /** Body bytes received before the body ended or failed. */
  bytes: number;
  /** The body text, for small bodies (first 4 KiB). */
  text: string;
  /** "complete" once the body stream ended normally, the error it failed with, or "pending" while it is read. */
  body: "pending" | "complete" | `error: ${string}`;
}

export interface RecordingService {
  server: ReturnType<typeof Bun.serve>;
  url: string;
  seen: Seen[];
  /** Requests whose handler started (counted before the body is read). */
  readonly hits: number;
  stop(): void;
}

/** A service that records every request, reads its body to the end, and answers 200 with the byte count. */
export function recordingService(opts: { maxRequestBodySize?: number } = {}): RecordingService {
  const seen: Seen[] = [];
  let hits = 0;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    development: false,
    maxRequestBodySize: opts.maxRequestBodySize ?? 4 * 2 ** 30,
    async fetch(req) {
      hits++;
      const url = new URL(req.url);
      const entry: Seen = { method: req.method, path: url.pathname + url.search, headers: Object.fromEntries(req.headers), bytes: 0, text: "", body: "pending" };
      seen.push(entry);
      const decoder = new TextDecoder();
      try {
        if (req.body)
          for await (const chunk of req.body) {
            entry.bytes += chunk.byteLength;
            if (entry.text.length < 4096) entry.text += decoder.decode(chunk, { stream: true });
          }
        entry.body = "complete";
      } catch (err) {
        entry.body = `error: ${(err as Error).message}`;
      }
      return new Response(`received ${entry.bytes}\n`);
    },
  });
  return {
    server,
    url: `http://127.0.0.1:${server.port}`,
    seen,
    get hits() {
      return hits;
    },
    stop: () => void server.stop(true),
  };
}

/** The certificate, key and trust bundle `fx.issue(service)` wrote: a valid mesh client. */
export function clientTls(fx: MeshFixture, service: string): ClientTls {
  const dir = join(fx.tmp.path, "certs", service);
  return {
    cert: readFileSync(join(dir, "chain.pem"), "utf8"),
    key: readFileSync(join(dir, "key.pem"), "utf8"),
    ca: readFileSync(join(dir, "bundle.pem"), "utf8"),
  };
}

/** Resident set size of a process, MiB, from /proc. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

export { eventually } from "./wait.ts";
