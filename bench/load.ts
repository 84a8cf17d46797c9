/**
 * The load generator used when wrk is not installed: N keep-alive HTTP/1.1 connections
 * on raw sockets, one request in flight on each, for a fixed duration and at most a fixed
 * number of requests. Runs as its own process (like wrk) and prints one JSON LoadResult.
 *
 *   bun bench/load.ts --url http://127.0.0.1:8080/ --connections 32 --duration 5 --host payments [--post BYTES]
 */
import { parseArgs } from "node:util";
import { ResponseReader } from "./http1-reader.ts";
import type { LoadResult } from "./load-result.ts";
import { percentile } from "./stats.ts";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    connections: { type: "string", default: "1" },
    duration: { type: "string", default: "5" },
    "max-requests": { type: "string", default: "5000000" },
    host: { type: "string" },
    post: { type: "string" },
  },
});
if (!values.url) throw new Error("--url is required");
const url = new URL(values.url);
const connections = Math.min(Math.max(1, Number(values.connections)), 1000);
const durationMs = Number(values.duration) * 1000;
const maxRequests = Number(values["max-requests"]);
const postBytes = values.post === undefined ? undefined : Number(values.post);
const target = `${url.pathname}${url.search} HTTP/1.1\r\nHost: ${values.host ?? url.host}\r\nUser-Agent: mesh-bench\r\n`;
const request = new TextEncoder().encode(
  postBytes === undefined
    ? `GET ${target}\r\n`
    : `POST ${target}Content-Type: application/octet-stream\r\nContent-Length: ${postBytes}\r\n\r\n${"y".repeat(postBytes)}`,
);

const latencies: number[] = [];
let errors = 0;
let non2xx = 0;
const started = performance.now();
const deadline = started + durationMs;
const enough = () => performance.now() >= deadline || latencies.length >= maxRequests;

interface Conn {
  reader: ResponseReader;
  sentAt: number;
}

function send(s: Bun.Socket<Conn>): void {
  s.data.sentAt = performance.now();
  // A short write of a small request to loopback would mean a broken socket.
  if (s.write(request) < request.length) {
    errors++;
    s.end();
  }
}

/** Keeps one connection busy until the run is over, reconnecting whenever the server closes. */
function connection(): Promise<void> {
  return new Promise((resolve) => {
    const open = () => {
      if (enough()) return resolve();
      Bun.connect<Conn>({
        hostname: url.hostname,
        port: Number(url.port || 80),
        data: { reader: new ResponseReader(), sentAt: 0 },
        socket: {
          open: send,
          data(s, chunk) {
            let ends;
            try {
              ends = s.data.reader.push(chunk);
            } catch {
              errors++;
              s.end();
              return;
            }
            if (ends.length === 0) return;
            const now = performance.now();
            for (const e of ends) {
              latencies.push(now - s.data.sentAt);
              if (e.status >= 400) non2xx++;
            }
            if (ends.at(-1)!.close || enough()) s.end();
            else send(s);
          },
          close: () => open(), // resolves once the run is over, else reconnects
          error: () => void errors++,
        },
      }).catch(() => {
        errors++;
        setTimeout(open, 10);
      });
    };
    open();
  });
}

// A response stuck past the deadline must not hold the run open: stop waiting 2 s later.
const hardStop = Bun.sleep(durationMs + 2000);
await Promise.race([Promise.all(Array.from({ length: connections }, connection)), hardStop]);
const durationS = (performance.now() - started) / 1000;
const sorted = Float64Array.from(latencies).sort();
const result: LoadResult = {
  requests: latencies.length,
  durationS,
  reqPerSec: latencies.length / durationS,
  p50Ms: percentile(sorted, 50),
  p99Ms: percentile(sorted, 99),
  errors,
  non2xx,
};
console.log(JSON.stringify(result));
process.exit(0); // sockets still open after a hard stop must not keep the process alive
