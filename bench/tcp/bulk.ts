/**
 * Bulk throughput: one connection at a time streams `bytes` of a known pattern one way as
 * fast as the path takes it (writing on whenever the socket drains), reads the echo back
 * at the same time and checks every byte of it; once all is sent it sends its FIN, and the
 * transfer ends when the last byte of echo is read and the service's FIN has come back.
 * Transfers follow each other, each on a new connection, for the warm-up and then the
 * measured window: at least one each, bounded in count and each in time. The rate is the
 * bytes one way over the transfers' own time (connecting is not in it).
 */
import type { Socket } from "bun";
import { dial } from "./dial.ts";
import { Window } from "./window.ts";
import { ERROR_SAMPLE, PATTERN_BYTES, type BulkResult } from "./wire.ts";

export interface BulkOptions {
  port: number;
  bytes: number;
  warmupMs: number;
  durationMs: number;
  maxTransfers: number;
  connectTimeoutMs: number;
  /** One transfer, from its first byte to the service's FIN. */
  transferTimeoutMs: number;
}

/** The most one write is given: about what a loopback socket takes at once. */
const WRITE_CHUNK = 256 * 1024;

interface Transfer {
  sent: number;
  received: number;
  startedAt: number;
  /** When the last byte of echo was read. */
  echoedAt: number;
  /** Our FIN is sent (all bytes were). */
  shut: boolean;
  /** The service's FIN came back. */
  fin: boolean;
  problem: string | undefined;
  settle: () => void;
}

/** One transfer; resolves with its time, or the reason it failed. */
async function transfer(o: BulkOptions, pat: Buffer): Promise<{ ms: number } | { error: string }> {
  let settle!: () => void;
  const settled = new Promise<void>((resolve) => (settle = resolve));
  const t: Transfer = { sent: 0, received: 0, startedAt: 0, echoedAt: 0, shut: false, fin: false, problem: undefined, settle };
  const fail = (s: Socket<Transfer>, why: string) => {
    s.data.problem ??= why;
    s.terminate();
  };
  const pump = (s: Socket<Transfer>) => {
    while (t.sent < o.bytes) {
      const at = t.sent % PATTERN_BYTES;
      const len = Math.min(WRITE_CHUNK, o.bytes - t.sent, PATTERN_BYTES - at);
      const n = s.write(pat.subarray(at, at + len));
      t.sent += Math.max(n, 0);
      if (n < len) return;
    }
    t.shut = true;
    s.shutdown();
  };
  let sock: Socket<Transfer>;
  try {
    sock = await dial<Transfer>(o.port, t, {
      data(s, chunk) {
        if (s.data.received + chunk.byteLength > o.bytes) return fail(s, `${s.data.received + chunk.byteLength} bytes of echo for ${o.bytes} sent`);
        // The chunk may span the pattern's end: compare piece by piece, without copies.
        for (let off = 0; off < chunk.byteLength; ) {
          const at = (s.data.received + off) % PATTERN_BYTES;
          const len = Math.min(chunk.byteLength - off, PATTERN_BYTES - at);
          if (!chunk.subarray(off, off + len).equals(pat.subarray(at, at + len))) return fail(s, `echo differs from what was sent near byte ${s.data.received + off}`);
          off += len;
        }
        s.data.received += chunk.byteLength;
        if (s.data.received === o.bytes) s.data.echoedAt = performance.now();
      },
      drain: (s) => pump(s),
      end(s) {
        s.data.fin = true;
        s.end();
      },
      close(s, err) {
        const d = s.data;
        // After our FIN the runtime reports the service's as a close without an error (no `end` event); a reset has one.
        if (d.shut && err === undefined) d.fin = true;
        if (d.received < o.bytes || !d.fin) d.problem ??= `closed${d.fin ? " after a FIN" : " without a FIN"}${err ? ` (${err.message})` : ""}, ${d.sent} bytes sent and ${d.received} echoed`;
        d.settle();
      },
      error(s, err) {
        s.data.problem ??= err.message;
      },
    }, o.connectTimeoutMs, true);
  } catch (err) {
    return { error: (err as Error).message };
  }
  const timer = setTimeout(() => fail(sock, `not done within ${o.transferTimeoutMs} ms: ${t.sent} bytes sent, ${t.received} echoed`), o.transferTimeoutMs);
  t.startedAt = performance.now();
  pump(sock);
  await settled;
  clearTimeout(timer);
  return t.problem === undefined ? { ms: t.echoedAt - t.startedAt } : { error: t.problem };
}

export async function bulk(o: BulkOptions, pat: Buffer): Promise<BulkResult> {
  const window = new Window();
  const errorSample: string[] = [];
  let errors = 0;
  let opened = 0;
  let transfers = 0;
  let transferMs = 0;
  const began = performance.now();

  // Bounded: every phase stops at its time or count, and each transfer at its own timeout.
  for (let n = 0; n < o.maxTransfers; n++) {
    if (window.phase === "warmup" && performance.now() - began >= o.warmupMs)
      window.open(() => {
        transfers = 0;
        transferMs = 0;
      });
    if (window.phase === "measure" && transfers > 0 && window.elapsedMs >= o.durationMs) break;
    const r = await transfer(o, pat);
    opened++;
    if ("error" in r) {
      errors++;
      if (errorSample.length < ERROR_SAMPLE) errorSample.push(`transfer ${n + 1}: ${r.error}`);
      // A path that fails one transfer would fail the next the same way: stop measuring.
      break;
    }
    if (window.phase === "measure") {
      transfers++;
      transferMs += r.ms;
    }
  }
  window.close();
  const bytes = transfers * o.bytes;
  return {
    kind: "bulk",
    bytesPerTransfer: o.bytes,
    transfers,
    bytes,
    transferMs,
    mbPerSec: transferMs > 0 ? bytes / 1e6 / (transferMs / 1000) : 0,
    windowMs: window.elapsedMs,
    cpuMs: window.cpuMs,
    opened,
    errors,
    errorSample,
  };
}
