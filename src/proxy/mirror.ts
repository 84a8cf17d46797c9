/**
 * An HTTPRoute rule's mirror (Istio's mirroring, the Gateway API's RequestMirror): a copy
 * of a call the rule takes goes to another service, and its answer is dropped. As Envoy
 * shadows: the copy's Host or :authority ends in "-shadow", so the mirror can tell copies
 * from calls; it is never retried; the caller never waits for it, and nothing it does
 * reaches the call. Copies are counted in mesh_mirrored_total by the mirror and the status
 * class of its answer, or why none was sent.
 *
 * Bodies: an HTTP/1.1 call's body is copied as it arrives (h1-server/request-body.ts), up
 * to 64 KiB, and the copy sent once the body is whole; one longer, or cut short by its
 * client, is not copied ("skipped"). An HTTP/2 call's body is copied as it is sent on, up
 * to 64 KiB; past that the copy is reset. Either way the mirror never takes a cut body for
 * whole.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http2";
import { outgoingFields } from "./h2/wire/fields.ts";
import type { H2ClientStream, UpstreamHandler } from "./h2/wire/client-stream.ts";
import type { Destination } from "./destinations.ts";
import type { PickContext } from "./endpoint.ts";
import type { ErrorParts } from "./errors.ts";
import { RELAY_SKIPS, skipFor } from "./headers.ts";
import type { ActiveSpan } from "./tracing/tracer.ts";
import type { RequestHeaderChange } from "./request-header-change.ts";
import type { ProxyMetrics } from "./metrics.ts";
import { statusClass } from "./metrics.ts";
import { callDestination, pickEndpoint, type CallOutcome } from "./outbound-call.ts";
import type { CallSettings } from "./policy.ts";
import { DEFAULT_RETRY_POLICY } from "./resilience/retry.ts";
import { chunkFrame, type BodySource, type RequestSink } from "./transport/h1/request-body.ts";
import { NO_ADDED_LINES, prepareRelayed, type RequestFraming } from "./transport/h1/request-head.ts";
import type { ResponseSink } from "./transport/h1/response-sink.ts";
import type { ServerRequest } from "./transport/h1-server/connection.ts";

/** The most of a body a copy carries. */
export const MIRROR_BODY_BYTES = 64 * 1024;

export interface CompiledMirror {
  dest: Destination;
  percent: number;
  /** The mirror's timeouts, without retries. */
  call: CallSettings;
}

export function compileMirror(dest: Destination, percent: number): CompiledMirror {
  return { dest, percent, call: { ...dest.call, retryPolicy: { ...DEFAULT_RETRY_POLICY, attempts: 0 } } };
}

/** Whether this call is copied: rolled per call at the mirror's percent. */
export function mirrors(mirror: CompiledMirror): boolean {
  return mirror.percent >= 100 || Math.random() * 100 < mirror.percent;
}

/** Envoy's shadow host: "-shadow" after the name, before any port. */
export function shadowHost(host: string): string {
  const port = /:\d+$/.exec(host);
  return port === null ? `${host}-shadow` : `${host.slice(0, port.index)}-shadow${port[0]}`;
}

function count(metrics: ProxyMetrics, mirror: CompiledMirror, outcome: string): void {
  metrics.mirrored.inc({ peer: mirror.dest.name, outcome });
}

const NO_HEADERS: PickContext = { header: () => null };

/**
 * A copy of the HTTP/1.1 call `req` for `mirror`, as the call goes out (the rule's header
 * changes made, the span's traceparent if it has one), taken before the call sends any of
 * its body; sent by the function returned, once the call has its place in the breaker (a
 * mirror may be the routed service itself) and the body has arrived whole. Undefined when
 * not copied: its body is too long.
 */
export function mirrorCopyH1(mirror: CompiledMirror, req: ServerRequest, metrics: ProxyMetrics, change: RequestHeaderChange | undefined, span: ActiveSpan | undefined): (() => void) | undefined {
  const body = req.body;
  const here = body === null ? null : body.copyWhole(MIRROR_BODY_BYTES);
  // A body still coming is copied as it arrives: its framing is known from its head already.
  const framing: RequestFraming | undefined =
    here === null ? { kind: "none" } : here !== undefined ? { kind: "length", length: here.byteLength } : req.head.chunked ? { kind: "chunked" } : req.head.contentLength <= MIRROR_BODY_BYTES ? { kind: "length", length: req.head.contentLength } : undefined;
  if (framing === undefined) return void count(metrics, mirror, "skipped");
  let prepared: ReturnType<typeof prepareRelayed>;
  try {
    prepared = prepareRelayed({ ...req.head, host: shadowHost(req.head.host) }, skipFor(change?.skips ?? RELAY_SKIPS, span), change?.lines ?? NO_ADDED_LINES, framing, undefined, span?.line);
  } catch {
    return void count(metrics, mirror, "skipped");
  }
  const send = (copy: Buffer | null) => void callDestination(mirror.dest, prepared, copy === null ? null : wholeBody(copy), NO_HEADERS, metrics, new MirrorOutcome(mirror, metrics), mirror.call);
  if (here !== undefined) return () => send(here);
  // Sent once both the call went and the copy is whole, whichever comes last.
  let copy: Buffer | undefined;
  let called = false;
  const copying = body!.copyAsItComes(
    MIRROR_BODY_BYTES,
    (whole) => (called ? send(whole) : (copy = whole)),
    () => count(metrics, mirror, "skipped"),
  );
  if (!copying) return void count(metrics, mirror, "skipped");
  return () => {
    called = true;
    if (copy !== undefined) send(copy);
  };
}

/** A copied body, sent whole: as it is when its head gives its length, else as one chunk and the last. */
function wholeBody(bytes: Buffer): BodySource {
  return {
    async pump(framing: RequestFraming, sink: RequestSink): Promise<boolean> {
      const framed = framing.kind !== "chunked" ? bytes : Buffer.concat([bytes.byteLength > 0 ? chunkFrame(bytes) : Buffer.alloc(0), LAST_CHUNK]);
      return sink.write(framed) || (await sink.drained());
    },
  };
}

const LAST_CHUNK = Buffer.from("0\r\n\r\n");

/** A copy's outcome: counted, its answer read and dropped. */
class MirrorOutcome implements CallOutcome, ResponseSink {
  constructor(
    private readonly mirror: CompiledMirror,
    private readonly metrics: ProxyMetrics,
  ) {}
  respond(status: number): ResponseSink {
    count(this.metrics, this.mirror, statusClass(status));
    return this;
  }
  failed(e: ErrorParts): void {
    count(this.metrics, this.mirror, statusClass(e.status));
  }
  abandoned(): void {}
  head(): void {}
  data(): void {}
  end(): void {}
  fail(): void {}
}

/**
 * The HTTP/2 copy of one stream: opened with the call's headers (its :authority a
 * shadow's) on the endpoint's session, which sends it once it knows the peer's stream
 * limit (wire/client-session.ts); fed the call's body as it is sent on, ended with it;
 * reset past MIRROR_BODY_BYTES, when its time is up, or when the call ends without its
 * body whole. Its answer is counted and dropped.
 */
export class H2Mirror {
  private stream: H2ClientStream | undefined;
  private sent = 0;
  private answered = false;
  /** The copy's timeout, from when it was made: a session that never settles must not hold it. */
  private timeout: Timer | undefined;
  /** Gives back the endpoint's and the breaker's place, once. */
  private release: (() => void) | undefined;

  constructor(
    private readonly mirror: CompiledMirror,
    headers: OutgoingHttpHeaders,
    private readonly metrics: ProxyMetrics,
  ) {
    const dest = mirror.dest;
    const endpoint = pickEndpoint(dest, NO_HEADERS, undefined);
    if (endpoint === undefined || dest.breaker.tryAcquire("requests") !== true) {
      count(metrics, mirror, "5xx");
      return;
    }
    endpoint.inflight++;
    this.release = () => {
      this.release = undefined;
      clearTimeout(this.timeout);
      endpoint.inflight--;
      dest.breaker.release("requests");
    };
    if (mirror.call.timeoutMs > 0) this.timeout = setTimeout(() => this.cancel(), mirror.call.timeoutMs);
    const copyHeaders = { ...headers, ":authority": shadowHost(String(headers[":authority"] ?? dest.name)) };
    this.stream = dest.pools.h2Session(endpoint).request(outgoingFields(copyHeaders), false, new MirrorAnswer(this));
  }

  /** The copy was answered `status`; its timeout runs on over the rest, as Envoy's covers a shadow's whole response, so a copy that never ends gives its places back. */
  answeredWith(status: number): void {
    this.answered = true;
    count(this.metrics, this.mirror, statusClass(status));
  }

  /** The copy is over, answered or not: its places given back, and a copy never answered counted as reset. */
  over(): void {
    if (this.stream === undefined) return;
    this.stream = undefined;
    this.release?.();
    if (!this.answered) count(this.metrics, this.mirror, "reset");
  }

  // ---- the call's body ----

  write(chunk: Buffer): void {
    this.sent += chunk.byteLength;
    if (this.sent > MIRROR_BODY_BYTES) return this.cancel();
    // Held by its stream until the session opens it, and within the peer's window: at most MIRROR_BODY_BYTES.
    this.stream?.write(chunk);
  }

  end(): void {
    this.stream?.end();
  }

  /** The copy's body cannot be whole, or its time is up: reset, never ended as if it were. */
  cancel(): void {
    const stream = this.stream;
    if (stream === undefined) return;
    stream.cancel();
    this.over();
  }
}

/** What a copy's stream tells of its answer: counted, the rest dropped. */
class MirrorAnswer implements UpstreamHandler {
  constructor(private readonly copy: H2Mirror) {}
  response(headers: IncomingHttpHeaders, endStream: boolean): void {
    this.copy.answeredWith(Number(headers[":status"]));
    if (endStream) this.copy.over();
  }
  data(): void {}
  trailers(): void {}
  end(): void {
    this.copy.over();
  }
  drain(): void {}
  failed(): void {
    this.copy.over();
  }
}
