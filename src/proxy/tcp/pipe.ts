/**
 * Two sockets joined into one byte stream, as a TCP proxy carries it: what one side sends
 * is written to the other; a side that cannot take more pauses the reading of the side
 * sending to it until it drains; a side's FIN (half-close) is passed on once its bytes
 * are, so a client may end its request and still read the answer; a reset is passed on
 * as a reset; and a stream that carries nothing either way for the idle time is closed.
 * The sockets must be opened with `allowHalfOpen`, or the runtime would close a side at
 * its FIN.
 */
import type { Socket } from "bun";
import { writeQueued } from "../transport/write-queue.ts";

/** 0: the client's side (the one that connected first); 1: the upstream side. */
export type Side = 0 | 1;

/** How the stream ended. */
export interface PipeReport {
  /** Bytes read from the client's side and from the upstream side. */
  fromClient: number;
  fromUpstream: number;
  /** Undefined when both sides closed in order; otherwise why not. */
  error: "reset" | "idle" | undefined;
}

export class TcpPipe {
  /** Bytes waiting for each side's socket, which took less than it was given. */
  private readonly queues: [Uint8Array[], Uint8Array[]] = [[], []];
  /** Each side's write half is shut (or the socket is gone): nothing more goes to it. */
  private readonly shut = [false, false];
  /** Each side sent its FIN, or closed. */
  private readonly ended = [false, false];
  private readonly closed = [false, false];
  private readonly bytes: [number, number] = [0, 0];
  private lastActive = performance.now();
  private error: PipeReport["error"];
  private reported = false;

  constructor(
    private readonly socks: [Socket<unknown>, Socket<unknown>],
    private readonly idleMs: number,
    private readonly onEnd: (report: PipeReport) => void,
  ) {
    // 0: never idle, so a timer a listener armed before the join is disarmed too.
    for (const s of socks) {
      if (idleMs > 0) this.armIdle(s, idleMs);
      else s.timeout(0);
    }
  }

  /** Bytes read from `side`. */
  data(side: Side, chunk: Uint8Array): void {
    this.bytes[side] += chunk.byteLength;
    this.lastActive = performance.now();
    const to = (1 - side) as Side;
    // Bytes for a side that is gone: as TCP answers them, with a reset.
    if (this.closed[to]) return this.socks[side].terminate();
    if (this.shut[to]) return;
    const queue = this.queues[to];
    if (queue.length > 0) queue.push(chunk);
    else {
      const n = this.socks[to].write(chunk);
      if (n >= chunk.byteLength) return;
      queue.push(chunk.subarray(Math.max(n, 0)));
    }
    this.socks[side].pause();
  }

  /** `side` can take bytes again. */
  drain(side: Side): void {
    if (!writeQueued(this.socks[side], this.queues[side])) return;
    const from = (1 - side) as Side;
    if (!this.closed[from]) this.socks[from].resume();
    if (this.ended[from]) this.shutWrite(side);
  }

  /** `side` sent its FIN: once what it sent is written on, the other side gets one too. */
  end(side: Side): void {
    this.ended[side] = true;
    const to = (1 - side) as Side;
    if (this.queues[to].length === 0) this.shutWrite(to);
  }

  /** `side`'s socket closed; `err`: it was reset or failed. */
  close(side: Side, err?: Error): void {
    if (this.closed[side]) return;
    this.closed[side] = true;
    this.shut[side] = true;
    this.queues[side].length = 0;
    const other = (1 - side) as Side;
    if (err !== undefined) {
      // A reset (or a failure) is passed on as a reset, as a TCP proxy does.
      this.error ??= "reset";
      if (!this.closed[other]) this.socks[other].terminate();
    } else {
      this.ended[side] = true;
      if (this.queues[other].length === 0) this.shutWrite(other);
    }
    if (this.closed[other]) this.report();
  }

  /** A side's idle timer fired: closes both if nothing moved for the idle time, else re-arms it. */
  timeout(side: Side): void {
    if (this.idleMs <= 0) return;
    const quiet = performance.now() - this.lastActive;
    if (quiet < this.idleMs) return this.armIdle(this.socks[side], this.idleMs - quiet);
    this.error ??= "idle";
    for (const s of this.socks) s.terminate();
  }

  /** Ends both sides gracefully (a drain's end): queued bytes are dropped. */
  shutdown(): void {
    for (const side of [0, 1] as const) {
      this.queues[side].length = 0;
      this.shutWrite(side);
    }
  }

  private shutWrite(side: Side): void {
    if (this.shut[side]) return;
    this.shut[side] = true;
    // Our FIN. Bun's end() stops reading too (measured), so while the side may still send, shutdown() alone.
    if (this.ended[side]) this.socks[side].end();
    else this.socks[side].shutdown();
  }

  private armIdle(sock: Socket<unknown>, ms: number): void {
    sock.timeout(Math.max(1, Math.ceil(ms / 1000)));
  }

  private report(): void {
    if (this.reported) return;
    this.reported = true;
    this.onEnd({ fromClient: this.bytes[0]!, fromUpstream: this.bytes[1]!, error: this.error });
  }
}
