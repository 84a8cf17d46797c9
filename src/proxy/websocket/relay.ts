/**
 * One proxied WebSocket: the client-facing ServerWebSocket ("downstream") and the
 * client WebSocket this proxy opened ("upstream"), pumping messages both ways.
 *
 * - Order: upstream messages that arrive before the downstream socket is open (the
 *   service may speak first) are queued, bounded, and flushed on open, before any later
 *   message. Downstream messages cannot precede the upstream: the client is answered
 *   101 only once the upstream is open.
 * - Backpressure, never unbounded buffering: a -1 from ServerWebSocket.send() pauses
 *   the upstream until `drain`; an upstream bufferedAmount above the high-water mark
 *   pauses the downstream until it falls below the low-water mark (Bun's client has no
 *   drain event, so that is polled while paused).
 * - Close: each side's code and reason are re-enacted on the other (close-codes.ts).
 */
import type { ServerWebSocket } from "bun";
import { OPEN, type ClientWebSocket } from "./client.ts";
import { closeClientSide, closeServerSide } from "./close-codes.ts";

export interface RelayLimits {
  /** Messages from upstream held while the downstream is not yet open. */
  maxQueuedBytes: number;
  maxQueuedMessages: number;
  /** Upstream send buffer above which the downstream is paused, and below which it resumes. */
  highWaterBytes: number;
  lowWaterBytes: number;
}

export const DEFAULT_RELAY_LIMITS: Readonly<RelayLimits> = Object.freeze({
  maxQueuedBytes: 4 << 20,
  maxQueuedMessages: 1024,
  highWaterBytes: 1 << 20,
  lowWaterBytes: 256 << 10,
});

/** As Bun delivers them: text as string, binary as Buffer (binaryType "nodebuffer"). */
type Message = string | Buffer<ArrayBuffer>;
const POLL_MS = 5;

function sizeOf(m: Message): number {
  return typeof m === "string" ? Buffer.byteLength(m) : m.byteLength;
}

export class Relay {
  private down?: ServerWebSocket<Relay>;
  private queue: Message[] = [];
  private queuedBytes = 0;
  /** A close decided before the downstream opened, replayed on open (after the queue if `flush`). */
  private closeOnAttach?: { code: number; reason: string; flush: boolean };
  private poll?: Timer;
  private ended = false;

  constructor(
    readonly upstream: ClientWebSocket,
    private readonly limits: RelayLimits,
    private readonly onEnd: () => void,
  ) {
    upstream.binaryType = "nodebuffer";
    // Listening from construction, so nothing said right after the handshake is missed.
    upstream.addEventListener("message", (ev) => this.fromUpstream(ev.data as Message));
    upstream.addEventListener("close", (ev) => this.upstreamClosed(ev.code, ev.reason));
  }

  /** The upstream is open and the client is about to get its 101: hold upstream reads until then. */
  upstreamOpened(): void {
    if (!this.down) this.upstream.pause();
  }

  /** Bun.serve `open`: flush what the upstream already said, then let it flow. */
  attach(down: ServerWebSocket<Relay>): void {
    this.down = down;
    const queued = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    const pending = this.closeOnAttach;
    if (!pending || pending.flush) for (const m of queued) this.deliver(m);
    if (pending) closeServerSide(down, pending.code, pending.reason);
    else if (!this.ended) this.upstream.resume();
  }

  fromDownstream(m: Message): void {
    if (this.ended || this.upstream.readyState !== OPEN) return; // it is closing; its close event ends us
    this.upstream.send(m);
    if (this.upstream.bufferedAmount > this.limits.highWaterBytes && !this.poll) {
      this.down?.pause();
      this.poll = setTimeout(() => this.checkUpstreamBuffer(), POLL_MS);
    }
  }

  /** Bun.serve `drain`: the client caught up. */
  downstreamDrained(): void {
    if (!this.ended) this.upstream.resume();
  }

  /** Bun.serve `close`. */
  downstreamClosed(code: number, reason: string): void {
    this.end();
    closeClientSide(this.upstream, code, reason);
  }

  /** Closes both sides with one code, e.g. 1001 when the proxy drains. */
  fail(code: number, reason: string): void {
    this.end();
    closeClientSide(this.upstream, code, reason);
    if (this.down) closeServerSide(this.down, code, reason);
    else this.closeOnAttach = { code, reason, flush: false };
  }

  /** The client never got its 101 (handshake failed or the client left): drop the upstream. */
  abandon(): void {
    this.end();
    closeClientSide(this.upstream, 1001, "client went away");
  }

  private fromUpstream(m: Message): void {
    if (this.ended) return;
    if (this.down) return this.deliver(m);
    const size = sizeOf(m);
    if (this.queue.length >= this.limits.maxQueuedMessages || this.queuedBytes + size > this.limits.maxQueuedBytes) {
      this.fail(size > this.limits.maxQueuedBytes ? 1009 : 1013, "mesh: relay queue full");
      return;
    }
    this.queue.push(m);
    this.queuedBytes += size;
  }

  private deliver(m: Message): void {
    const down = this.down!;
    const status = down.send(m);
    if (status === -1) this.upstream.pause();
    // 0 means dropped (past backpressureLimit), except for an empty message, which
    // also reports 0. Losing a message silently would corrupt the stream.
    else if (status === 0 && down.readyState === 1 && sizeOf(m) > 0) this.fail(1013, "mesh: client too slow");
  }

  private upstreamClosed(code: number, reason: string): void {
    if (this.down) {
      this.end();
      closeServerSide(this.down, code, reason);
    } else this.closeOnAttach ??= { code, reason, flush: true };
  }

  private checkUpstreamBuffer(): void {
    this.poll = undefined;
    if (this.ended) return;
    if (this.upstream.bufferedAmount <= this.limits.lowWaterBytes) this.down?.resume();
    else this.poll = setTimeout(() => this.checkUpstreamBuffer(), POLL_MS);
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.poll);
    this.poll = undefined;
    this.onEnd();
  }
}
