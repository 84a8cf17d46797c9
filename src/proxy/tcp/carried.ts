/**
 * One carried TCP connection, from the client's socket (the application's, outbound; a
 * peer sidecar's mTLS socket, inbound) to its upstream: what the client sends before the
 * upstream is connected is held (reading pauses past HOLD_LIMIT), then both sockets are
 * joined in a TcpPipe. The subclasses decide where it goes and whether it may.
 */
import type { Socket } from "bun";
import type { LegOwner, UpstreamLeg } from "./leg.ts";
import { TcpPipe, type PipeReport, type TcpTimeouts } from "./pipe.ts";

/** Bytes a client may send before its upstream is connected, before its reading pauses. */
const HOLD_LIMIT = 64 * 1024;
/** How long a side may keep its half open after a drain's FIN before it is reset. */
const DRAIN_GRACE_MS = 1_000;

/** How a carried connection ended: once joined "ok", or PipeReport's error ("reset", "cut", "idle", "malformed", "max-duration"); else why it never was. */
export type CarriedResult = string;

export abstract class CarriedConnection implements LegOwner {
  protected pipe: TcpPipe | undefined;
  protected readonly startedAt = performance.now();
  private readonly held: Uint8Array[] = [];
  private heldBytes = 0;
  private heldPaused = false;
  private clientEnded = false;
  /** The client's socket closed before the join. */
  protected clientGone = false;
  private done = false;
  /** The joined upstream's socket, for revoke(). */
  private upstreamSocket: Socket<UpstreamLeg> | undefined;
  /** Why it was revoked: reported instead of how its pipe ended. */
  private revokedAs: CarriedResult | undefined;

  constructor(readonly client: Socket<unknown>) {}

  /** Ended, reported, and nothing more is done with it. */
  get finished(): boolean {
    return this.done;
  }

  // The client socket's events.
  onData(chunk: Uint8Array): void {
    if (this.pipe !== undefined) this.pipe.data(0, chunk);
    else if (!this.done) this.early(chunk);
  }
  onDrain(): void {
    this.pipe?.drain(0);
  }
  onEnd(): void {
    if (this.pipe !== undefined) this.pipe.end(0);
    else this.clientEnded = true;
  }
  onTimeout(): void {
    if (this.pipe !== undefined) this.pipe.timeout(0);
    else this.refuse("timeout");
  }
  onClose(err?: Error): void {
    if (this.pipe !== undefined) return this.pipe.close(0, err);
    this.clientGone = true;
    this.finish("client-closed", undefined);
  }

  // The upstream socket's events, once ready() joined it.
  upstreamData(chunk: Uint8Array): void {
    this.pipe?.data(1, chunk);
  }
  upstreamDrain(): void {
    this.pipe?.drain(1);
  }
  upstreamEnd(): void {
    this.pipe?.end(1);
  }
  upstreamClose(err: Error | undefined): void {
    this.pipe?.close(1, err);
  }
  upstreamTimeout(): void {
    this.pipe?.timeout(1);
  }

  abstract ready(socket: Socket<UpstreamLeg>): void;
  abstract failed(err: Error): void;

  /** A drain's end: both sides are ended gracefully, or the client closed if nothing is joined yet. */
  shutdown(): void {
    if (this.pipe !== undefined) this.pipe.shutdown(DRAIN_GRACE_MS);
    else this.refuse("draining");
  }

  /**
   * What admitted the connection no longer does (a config change): a joined one is reset
   * both ways, one not yet joined refused; reported as `result`, as a refusal at its open.
   */
  protected revoke(result: CarriedResult): void {
    if (this.done) return;
    if (this.pipe === undefined) return this.refuse(result);
    this.revokedAs = result;
    this.client.terminate();
    this.upstreamSocket?.terminate();
  }

  /** Client bytes before the join: a subclass reads its preamble from them. */
  protected early(chunk: Uint8Array): void {
    this.hold(chunk);
  }

  protected hold(chunk: Uint8Array): void {
    this.held.push(chunk);
    this.heldBytes += chunk.byteLength;
    if (this.heldBytes > HOLD_LIMIT && !this.heldPaused) {
      this.heldPaused = true;
      this.client.pause();
    }
  }

  /** Joins the client to `upstream`; the held bytes go first. `framed`: which of the two is a sidecar (frames.ts). */
  protected join(upstream: Socket<UpstreamLeg>, timeouts: TcpTimeouts, framed: readonly [boolean, boolean]): TcpPipe {
    const pipe = new TcpPipe([this.client, upstream as Socket<unknown>], framed, timeouts, (report) => this.finish(report.error ?? "ok", report));
    this.pipe = pipe;
    this.upstreamSocket = upstream;
    if (this.heldPaused) {
      this.heldPaused = false;
      this.client.resume();
    }
    for (const chunk of this.held.splice(0)) pipe.data(0, chunk);
    this.heldBytes = 0;
    if (this.clientEnded) pipe.end(0);
    return pipe;
  }

  /** Refused before the join: the client is closed, and the refusal reported. */
  protected refuse(result: CarriedResult): void {
    if (this.done) return;
    this.finish(result, undefined);
    this.closeRefused();
  }

  /** How a refused client is closed: a reset for an application, an answer for a peer sidecar. */
  protected closeRefused(): void {
    this.client.terminate();
  }

  private finish(result: CarriedResult, report: PipeReport | undefined): void {
    if (this.done) return;
    this.done = true;
    this.held.length = 0;
    this.ended(this.revokedAs ?? result, report);
  }

  /** Reports how it ended, once. */
  protected abstract ended(result: CarriedResult, report: PipeReport | undefined): void;
}
