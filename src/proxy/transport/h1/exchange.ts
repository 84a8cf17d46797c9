/** One request/response on a connection, and the flow control its response body drives. */
import type { PreparedRequest } from "./request-head.ts";
import type { BodyFraming } from "./response-framing.ts";
import type { BodyFlow, ResponseBody } from "./response-body.ts";

export const enum Phase {
  Head,
  Body,
  Done,
}

/** What an exchange asks of the connection it runs on. */
export interface ExchangeHost {
  pauseFor(ex: Exchange): void;
  resumeFor(ex: Exchange | undefined): void;
  abandon(ex: Exchange): void;
}

/** One request/response on the connection; also the flow its response body drives. */
export class Exchange implements BodyFlow {
  phase = Phase.Head;
  /** Any request byte was accepted by the socket. */
  wrote = false;
  requestDone = false;
  received = 0;
  settled = false;
  reusable = true;
  body: ResponseBody | undefined;
  framing: BodyFraming | undefined;
  onAbort: (() => void) | undefined;

  constructor(
    readonly conn: ExchangeHost,
    readonly req: PreparedRequest,
    readonly resolve: (res: Response) => void,
    readonly reject: (err: Error) => void,
    readonly signal: AbortSignal | undefined,
  ) {}

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
