/**
 * HTTP transport to an etcd cluster through its JSON gateway. Talks to one member at a
 * time and moves to the next when that member fails, so losing a member costs a retry,
 * not an outage. What is retried depends on whether a failed request could still have
 * been applied: see `Delivery`.
 */
import type { Logger } from "../core/log.ts";
import { StoreError } from "./errors.ts";

/**
 * "retry": the request may be repeated after any failure (reads, and writes whose repetition
 * leaves the same state: put, delete, lease keep-alive, revoke).
 * "at-most-once": repeated only when it surely never reached a member; when it may have been
 * applied, `AmbiguousResult` is thrown so the caller can find out what happened.
 */
export type Delivery = "retry" | "at-most-once";

/** The request may or may not have been applied. */
export class AmbiguousResult extends Error {
  override readonly name = "AmbiguousResult";
}

/** TLS to the members (https:// endpoints), PEM texts: the CA that signed their certificates, and a client certificate and key when they ask for one (--client-cert-auth). */
export interface EtcdTls {
  ca?: string;
  cert?: string;
  key?: string;
}

export interface EtcdClientOptions {
  /** Client URLs of the members, e.g. https://10.0.0.1:2379. */
  endpoints: string[];
  tls?: EtcdTls;
  /** One attempt against one member. */
  requestTimeoutMs?: number;
  /** How long one operation keeps trying members before failing `unavailable`. Leader elections take seconds. */
  retryForMs?: number;
  /**
   * How often a watch checks that its member is still healthy. A member that hangs or is cut
   * off from its peers keeps the stream open and silently sends nothing; a killed one is
   * noticed at once anyway.
   */
  watchProbeMs?: number;
  log?: Logger;
}

/** A member answered with a gRPC status (through the gateway's JSON error body). */
interface GatewayError {
  code?: number;
  error?: string;
  message?: string;
}

type Failure = { applied: "no" | "maybe"; reason: string } | { final: StoreError };

// gRPC status codes.
const NOT_FOUND = 5;
const OUT_OF_RANGE = 11;
const RESOURCE_EXHAUSTED = 8;
const TRANSIENT = new Set([2 /* unknown */, 4 /* deadline */, RESOURCE_EXHAUSTED, 10 /* aborted */, 13 /* internal */, 14 /* unavailable */]);
/**
 * RESOURCE_EXHAUSTED is also "too many requests" (transient), but this one is final: the
 * cluster is out of space (NOSPACE alarm) and refuses every write, on every member, until an
 * operator frees space. Nothing was applied.
 */
const NO_SPACE = /database space exceeded/;
/** Refusals etcd makes before proposing anything, so nothing was applied. */
const REFUSED_BEFORE_PROPOSAL = /no leader|too many requests|unhealthy cluster|not capable/;

export class EtcdClient {
  readonly endpoints: string[];
  private current = 0;
  private readonly requestTimeoutMs: number;
  readonly retryForMs: number;
  readonly watchProbeMs: number;
  private readonly log: Logger | undefined;
  private readonly tls: EtcdTls | undefined;

  constructor(opts: EtcdClientOptions) {
    if (!opts.endpoints.length) throw new StoreError("rejected", "etcd: no endpoints given");
    this.endpoints = opts.endpoints.map((e) => e.replace(/\/+$/, ""));
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5_000;
    this.retryForMs = opts.retryForMs ?? 15_000;
    this.watchProbeMs = opts.watchProbeMs ?? 5_000;
    this.log = opts.log;
    this.tls = opts.tls;
  }

  /** A request to a member, over TLS with this client's certificate when the endpoint is https. */
  private fetch(url: string, init: RequestInit = {}): Promise<Response> {
    return fetch(url, this.tls === undefined || !url.startsWith("https:") ? init : { ...init, tls: { ...this.tls, rejectUnauthorized: true } });
  }

  /**
   * POSTs `body` to `path` on the current member, moving through the members on failure
   * until one answers or `retryForMs` runs out (or `deadline`, for an operation whose earlier
   * requests already spent part of it: at least one attempt is made). Streaming endpoints answering one message
   * (lease keep-alive) are unwrapped from their `{"result": …}` line.
   */
  async call<T>(path: string, body: unknown, delivery: Delivery, deadline = performance.now() + this.retryForMs): Promise<T> {
    let lastReason = "";
    for (let attempt = 0; ; attempt++) {
      const endpoint = this.endpoints[this.current]!;
      const outcome = await this.attempt(endpoint, path, body);
      if ("value" in outcome) return outcome.value as T;
      if ("final" in outcome) throw outcome.final;
      if (outcome.applied === "maybe" && delivery === "at-most-once") {
        this.moveOn(endpoint, outcome.reason);
        throw new AmbiguousResult(`${path} on ${endpoint}: ${outcome.reason}`);
      }
      lastReason = `${endpoint}: ${outcome.reason}`;
      this.moveOn(endpoint, outcome.reason);
      if (performance.now() >= deadline)
        throw new StoreError("unavailable", `etcd: no member answered ${path} within ${this.retryForMs} ms (last: ${lastReason})`);
      // A whole round failed: likely an election in progress. Back off before the next round.
      if ((attempt + 1) % this.endpoints.length === 0) await Bun.sleep(Math.min(500, 50 * 2 ** Math.floor(attempt / this.endpoints.length)));
    }
  }

  /**
   * One attempt at the current member, bounded by `timeoutMs`: for checks that must answer
   * promptly rather than wait out a failover. A failure moves on, so the next check asks
   * another member.
   */
  async callOnce<T>(path: string, body: unknown, timeoutMs: number): Promise<T> {
    const endpoint = this.currentEndpoint();
    const outcome = await this.attempt(endpoint, path, body, timeoutMs);
    if ("value" in outcome) return outcome.value as T;
    if ("final" in outcome) throw outcome.final;
    this.moveOn(endpoint, outcome.reason);
    throw new StoreError("unavailable", `etcd ${endpoint}${path}: ${outcome.reason}`);
  }

  /**
   * Opens a streaming POST (watch) on `endpoint`. Only the wait for the response
   * headers is bounded by the request timeout; the stream then lives until `signal` aborts.
   */
  async openStream(endpoint: string, path: string, body: unknown, signal: AbortSignal): Promise<Response> {
    const ctl = new AbortController();
    // Linked for the stream's whole life: aborting `signal` later must still close the body.
    signal.addEventListener("abort", () => ctl.abort(), { once: true });
    const timer = setTimeout(() => ctl.abort(), this.requestTimeoutMs);
    try {
      const res = await this.fetch(endpoint + path, {
        method: "POST",
        body: JSON.stringify(body),
        signal: ctl.signal,
        // Ask the member to end the stream if it loses its leader (a partitioned member
        // would otherwise keep the stream open and silently deliver nothing).
        headers: { "content-type": "application/json", "grpc-metadata-hasleader": "true" },
      });
      if (!res.ok) {
        const text = await res.text();
        throw new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`);
      }
      return res;
    } catch (err) {
      ctl.abort();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Why `endpoint` is not fit to serve a watch, or undefined if it is (answers, and has a leader).
   * A NOSPACE alarm alone is no reason: reads and watches still work while writes are refused,
   * and /health counts it unless excluded (etcd ≥ 3.4.16; older members ignore the parameter).
   */
  async probe(endpoint: string): Promise<string | undefined> {
    try {
      const res = await this.fetch(`${endpoint}/health?exclude=NOSPACE`, { signal: AbortSignal.timeout(this.requestTimeoutMs) });
      const body = (await res.json()) as { health?: string };
      return body.health === "true" ? undefined : `unhealthy: ${JSON.stringify(body)}`;
    } catch (err) {
      return `health check failed: ${(err as Error).message}`;
    }
  }

  /** The member requests go to now. */
  currentEndpoint(): string {
    return this.endpoints[this.current]!;
  }

  /** Moves to the next member, unless another caller already moved off `failed`. */
  moveOn(failed: string, reason: string): void {
    if (this.endpoints[this.current] !== failed) return;
    this.current = (this.current + 1) % this.endpoints.length;
    if (this.endpoints.length > 1) this.log?.warn({ failed, next: this.endpoints[this.current], reason }, "etcd: member failed, trying the next");
  }

  private async attempt(endpoint: string, path: string, body: unknown, timeoutMs = this.requestTimeoutMs): Promise<{ value: unknown } | Failure> {
    let res: Response;
    let text: string;
    try {
      res = await this.fetch(endpoint + path, {
        method: "POST",
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
        headers: { "content-type": "application/json" },
      });
      text = await res.text();
    } catch (err) {
      const e = err as { code?: unknown; name?: string; message?: string };
      const code = typeof e.code === "string" ? e.code : (e.name ?? "Error"); // timeouts carry a numeric DOMException code
      const message = e.message ?? String(err);
      // Refused or unresolvable: the request never left. Anything else (reset, timeout)
      // may have happened after the member received it.
      const unsent = code === "ECONNREFUSED" || code === "ConnectionRefused" || code === "ENOTFOUND" || code === "FailedToOpenSocket";
      return { applied: unsent ? "no" : "maybe", reason: message.startsWith(code) ? message : `${code}: ${message}` };
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text.split("\n", 1)[0]!);
    } catch {
      const reason = `HTTP ${res.status}, not JSON: ${text.slice(0, 200)}`;
      // A 4xx that is not the gateway's JSON: not an etcd ≥ 3.4 gateway (3.3 and older serve /v3beta, /v3alpha).
      if (res.status < 500) return { final: new StoreError("rejected", `etcd ${endpoint}${path}: ${reason}`) };
      return { applied: "maybe", reason };
    }
    const msg = parsed as { error?: string | { grpc_code?: number; message?: string }; code?: number; message?: string; result?: unknown };
    if (res.ok && msg.error === undefined) return { value: msg.result ?? parsed };
    // Unary errors are {error, code, message}; stream errors are {error: {grpc_code, message}}.
    const e: GatewayError =
      typeof msg.error === "object" ? { code: msg.error.grpc_code, error: msg.error.message } : { code: msg.code, error: msg.error, message: msg.message };
    return classify(e, res.status);
  }
}

function classify(e: GatewayError, status: number): Failure {
  const text = e.error ?? e.message ?? `HTTP ${status}`;
  if (e.code === NOT_FOUND && /lease not found/.test(text)) return { final: new StoreError("lease-not-found", text) };
  if (e.code === OUT_OF_RANGE && /compacted/.test(text)) return { final: new StoreError("compacted", text) };
  if (e.code === RESOURCE_EXHAUSTED && NO_SPACE.test(text)) return { final: new StoreError("no-space", `etcd: ${text}`) };
  if (e.code === undefined || TRANSIENT.has(e.code)) return { applied: REFUSED_BEFORE_PROPOSAL.test(text) ? "no" : "maybe", reason: text };
  return { final: new StoreError("rejected", `etcd: ${text}`) };
}
