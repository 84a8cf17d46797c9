/**
 * Access log: one JSON line per request, inbound and outbound, written when the request
 * is over (`--access-log PATH`, or `-` for stdout). Off by default: a sidecar's operator
 * chooses where the lines go and pays for them; metrics are always on.
 *
 * Every field comes from the request as parsed and the proxy's own view of it, and is
 * written through JSON.stringify, so a header value cannot forge a field or a line (CR,
 * LF and quotes are escaped; the parser has refused control characters already).
 * Lines are joined into 32 KiB writes, flushed every second and at the end of a drain.
 * A file is opened again on SIGHUP (reopen()), after logrotate has moved it away, as
 * nginx and most daemons do; until then lines go to the moved file, none are lost. That
 * open is asynchronous: one that blocks (a FIFO at the path, a hung network filesystem)
 * must not stop the event loop, and so the proxy.
 * With a log, one hop at 32 connections: 0.95–1.00× req/s and 1.10–1.16× CPU (about
 * 0.9 µs of user time per line; one write per line cost half a microsecond more).
 *
 * Not logged: requests refused before their head was parsed whole (malformed, too large,
 * too slow: counted in mesh_requests_refused_total). A WebSocket gets its line when it
 * closes, with status 101 (websocket/upgrade-observer.ts). Without a log the relays are the plain classes, so the
 * hot path pays nothing for it (one hop A/B: 0.98x req/s, 1.01x CPU, inside the 1.4% /
 * 1.8% an A/A run of one binary spread by in the same hour).
 */
import { closeSync, openSync } from "node:fs";
import { open as openAsync } from "node:fs/promises";
import type { FileSink } from "bun";
import { DataError } from "../core/errors.ts";
import type { ReplyCause } from "./errors.ts";
import { fieldValue, type RequestHead } from "./transport/h1/request-parse.ts";

/** What a line records of its request. */
export type LoggedHead = Pick<RequestHead, "method" | "pathAndQuery" | "host" | "fields">;

const FLUSH_EVERY_MS = 1000;
/** Lines are joined in a string up to this size and handed to the sink in one write. */
const BATCH_CHARS = 32 * 1024;

/** Where lines go: a sink, and how to let go of what it holds. */
interface Opened {
  sink: FileSink;
  close(): void;
}

export class AccessLog {
  private readonly timer: Timer;
  private batch = "";
  private opened: Opened;
  /** A reopen whose open has not returned yet (a blocked one may never). */
  private reopening = false;

  /** `open` again on reopen(); without it (stdout) reopen() does nothing. */
  constructor(
    first: Opened,
    private readonly open?: () => Promise<Opened>,
  ) {
    this.opened = first;
    this.timer = setInterval(() => void this.flush(), FLUSH_EVERY_MS);
    this.timer.unref();
  }

  /** Opens the file again (it was moved by log rotation); the error if it cannot be, and lines go on to the old one. */
  async reopen(): Promise<Error | undefined> {
    if (this.open === undefined) return undefined;
    if (this.reopening) return new Error("the last reopen's open has not returned yet");
    let next: Opened;
    this.reopening = true;
    try {
      next = await this.open();
    } catch (err) {
      return err as Error;
    } finally {
      this.reopening = false;
    }
    this.writeBatch();
    const old = this.opened;
    this.opened = next;
    await old.sink.end();
    old.close();
    return undefined;
  }

  /**
   * `peer`: the caller's SPIFFE ID inbound, the destination service outbound ("" when the
   * proxy answered before choosing one). `durationMs` is to the response head (for what
   * the proxy answered itself, to its answer); for a WebSocket, the session's length.
   * `grpcStatus`: for a gRPC call, the status its client received. `cause`: why the proxy
   * answered itself, when it did (mesh_error, and mesh_overflow for the limit an overflow reached).
   */
  request(direction: "inbound" | "outbound", head: LoggedHead, status: number, durationMs: number, peer: string, grpcStatus?: string, cause?: ReplyCause): void {
    const line = {
      time: new Date().toISOString(),
      direction,
      method: head.method,
      path: head.pathAndQuery,
      authority: head.host,
      status,
      duration_ms: Math.round(durationMs * 1000) / 1000,
      peer,
      request_id: fieldValue(head.fields, "x-request-id"),
      // A gRPC call's outcome: its HTTP status is 200 whatever happened.
      ...(grpcStatus !== undefined && { grpc_status: grpcStatus }),
      // A proxy's own 503 and a service's look alike but for this.
      ...(cause !== undefined && { mesh_error: cause.error }),
      ...(cause?.limit !== undefined && { mesh_overflow: cause.limit }),
    };
    this.batch += JSON.stringify(line) + "\n";
    if (this.batch.length >= BATCH_CHARS) this.writeBatch();
  }

  /**
   * One opaque TCP connection, when it ends: `authority` is the service and port it was for
   * (outbound the Service's port, inbound the workload's, the only one the callee is told),
   * `result` how it ended (ok, reset, idle) or why it was refused; bytes from and to its client.
   */
  connection(direction: "inbound" | "outbound", authority: string, peer: string, result: string, durationMs: number, received: number, sent: number): void {
    const line = {
      time: new Date().toISOString(),
      direction,
      protocol: "tcp",
      authority,
      result,
      duration_ms: Math.round(durationMs * 1000) / 1000,
      bytes_received: received,
      bytes_sent: sent,
      peer,
    };
    this.batch += JSON.stringify(line) + "\n";
    if (this.batch.length >= BATCH_CHARS) this.writeBatch();
  }

  private writeBatch(): void {
    if (this.batch === "") return;
    this.opened.sink.write(this.batch);
    this.batch = "";
  }

  private async flush(): Promise<void> {
    this.writeBatch();
    await this.opened.sink.flush();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}

/** `-` is stdout; a path is opened for appending (created 0640), so a restart keeps what was logged. */
export function openAccessLog(target: string, where: string): AccessLog {
  if (target === "-") return new AccessLog({ sink: Bun.stdout.writer(), close: () => undefined });
  let fd: number;
  try {
    fd = openSync(target, "a", 0o640);
  } catch (err) {
    throw new DataError(`cannot open the access log ${target}: ${(err as Error).message}`, where);
  }
  const reopen = async (): Promise<Opened> => {
    // The handle stays referenced by its close(), so it is not closed under the sink when collected.
    const handle = await openAsync(target, "a", 0o640);
    return { sink: Bun.file(handle.fd).writer(), close: () => void handle.close() };
  };
  // The sink writes through a copy of the descriptor, which it lets go of when collected; ours is closed with it.
  return new AccessLog({ sink: Bun.file(fd).writer(), close: () => closeSync(fd) }, reopen);
}
