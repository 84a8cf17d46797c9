/** One request/response on a connection, and the flow control its response body drives. */
import type { AbortLike } from "./abort.ts";
import type { RequestBody } from "./request-body.ts";
import type { PreparedRequest } from "./request-head.ts";
import { BodyFraming, type BodyPieces } from "./response-framing.ts";
import type { BodyFlow } from "./response-body.ts";
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
