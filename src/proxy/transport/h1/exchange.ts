/** One request/response on a connection: the reading of its response, and the flow control its body drives. */
import type { AbortLike } from "./abort.ts";
import { ProtocolError } from "./errors.ts";
import type { RequestBody } from "./request-body.ts";
import type { PreparedRequest } from "./request-head.ts";
import { BodyFraming, type BodyPieces } from "./response-framing.ts";
import type { BodyFlow } from "./response-body.ts";
import type { ResponseHead } from "./response-head.ts";
import type { ResponseSink } from "./response-sink.ts";

export const enum Phase {
  Head,
  Body,
  Done,
}

/** What an exchange asks of the connection it runs on. */
export interface ExchangeHost {
  /** The exchange's signal fired (deadline, caller gone). */
  abortExchange(ex: Exchange, reason: unknown): void;
  pauseFor(ex: Exchange): void;
  resumeFor(ex: Exchange | undefined): void;
  abandon(ex: Exchange): void;
}

/**
 * One request/response on the connection; also the framing of its response body (set
 * when the head arrives) and the flow that body drives.
 */
export class Exchange extends BodyFraming implements BodyFlow, BodyPieces {
  phase = Phase.Head;
  /** Any request byte was accepted by the socket. */
  wrote = false;
  requestDone = false;
  received = 0;
  reusable = true;
  /** Registered as its signal's listener (handleEvent) until the exchange is over. */
  listening = false;
  private emitter: ((data: Uint8Array) => void) | undefined;

  constructor(
    readonly conn: ExchangeHost,
    readonly req: PreparedRequest,
    /** Kept for a send elsewhere after the keep-alive race (only a body never read can go again). */
    readonly body: RequestBody | null,
    readonly sink: ResponseSink,
    readonly signal: AbortLike | undefined,
  ) {
    super();
  }

  /**
   * The response head arrived, with buf[restAt..] read after it; whether the response is
   * complete. When those bytes hold the whole body (the common case for small responses)
   * the sink is told so, and gets it before this returns: a chunked body that is
   * malformed then fails the request itself (a 502) rather than a 200 whose body breaks.
   */
  begin(head: ResponseHead, buf: Buffer, restAt: number): boolean {
    if (head.status > 599) throw new ProtocolError(`invalid status ${head.status}`);
    this.frame(head, this.req.isHead);
    // A close-delimited body leaves nothing to reuse.
    this.reusable = head.keepAlive && this.kind !== "close";
    // Whether the rest completes the body: arithmetic, except for chunked, which is decoded
    // first (into `early`) so that a malformed body fails before the sink sees a head.
    const restLength = buf.length - restAt;
    let early: Uint8Array[] | undefined;
    if (restLength > 0 && this.kind === "chunked") {
      const pieces: Uint8Array[] = (early = []);
      this.feed(buf, restAt, buf.length, { piece: (b, s, e) => pieces.push(b.subarray(s, e)), emit: (piece) => pieces.push(piece) });
    }
    const complete = early !== undefined ? this.done : this.completedBy(restLength);
    this.sink.head(head, this, complete);
    // Past this point a failure is the body's (the sink was given the head).
    this.phase = Phase.Body;
    if (early !== undefined) for (const piece of early) this.emit(piece);
    else if (restLength > 0) this.feed(buf, restAt, buf.length, this);
    if (this.extra) this.reusable = false; // bytes beyond the response: the connection is out of step
    return complete;
  }

  /** More of the response body; whether it is complete. */
  more(chunk: Uint8Array): boolean {
    const complete = this.feed(chunk, 0, chunk.byteLength, this);
    if (this.extra) this.reusable = false;
    return complete;
  }

  /** Hands decoded (chunked) body pieces to the sink; bound once, when a chunked body first needs it. */
  get emit(): (data: Uint8Array) => void {
    return (this.emitter ??= (data) => {
      if (data.byteLength > 0) this.sink.data(data, 0, data.byteLength);
    });
  }

  piece(buf: Uint8Array, start: number, end: number): void {
    this.sink.data(buf, start, end);
  }

  /** Its signal fired: the exchange itself is the listener, so no closure per request. */
  handleEvent(): void {
    this.conn.abortExchange(this, this.signal!.reason);
  }

  pause(): void {
    this.conn.pauseFor(this);
  }
  resume(): void {
    this.conn.resumeFor(this);
  }
  abandon(): void {
    this.conn.abandon(this);
  }
}
