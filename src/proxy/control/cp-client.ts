/**
 * The sidecar's client for the control plane's mTLS API. It presents the workload's
 * certificate and accepts only a server proving the control plane's SPIFFE ID; the
 * connection is pooled, so the check runs once per connection. Given several replicas,
 * it moves to the next one whenever the current one cannot be reached; the callers'
 * loops retry, so a dead replica costs one failed call.
 */
import { controlPlaneId } from "../../control-plane/well-known.ts";
import type { WorkloadCerts } from "../certs.ts";
import { expectPeer } from "../destinations.ts";
import { boundedText } from "./bounded-body.ts";

const CALL_TIMEOUT_MS = 5_000;
/**
 * The most of a config answer read. A snapshot holds one sidecar's view (the Services it
 * calls with their endpoints, and its policies): a few MiB even in a large mesh, and the
 * control plane refuses manifests past 4 MiB each. Parsed, JSON takes several times its
 * size, so this keeps a sidecar's memory safe while leaving a real config ample room.
 */
export const MAX_CONFIG_ANSWER_BYTES = 64 << 20;
/** The other answers are a lease, an ok, or a certificate with its bundle. */
const MAX_ANSWER_BYTES = 1 << 20;

export class ControlPlaneError extends Error {
  override readonly name = "ControlPlaneError";
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export class ControlPlaneClient {
  private session: Bun.FetchSession;
  private current = 0;

  constructor(private baseUrls: string[], certs: WorkloadCerts) {
    if (baseUrls.length === 0) throw new Error("no control plane URL");
    this.session = this.open(certs);
  }

  get baseUrl(): string {
    return this.baseUrls[this.current]!;
  }

  /** After renewal: new connections present the new certificate. */
  useCerts(certs: WorkloadCerts): void {
    const old = this.session;
    this.session = this.open(certs);
    old.close();
  }

  async post<T>(path: string, body: unknown): Promise<T> {
    const res = await this.send(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    return answer<T>(res, path, MAX_ANSWER_BYTES);
  }

  /** GET; undefined on 304 (nothing new). `timeoutMs` must cover how long the server may hold a poll. */
  async get<T>(path: string, signal?: AbortSignal, timeoutMs = CALL_TIMEOUT_MS, maxBytes = MAX_ANSWER_BYTES): Promise<T | undefined> {
    const res = await this.send(path, { signal }, timeoutMs);
    if (res.status === 304) return undefined;
    return answer<T>(res, path, maxBytes);
  }

  /** Every call has a deadline: a replica that hangs (paused, partitioned) must not hold a loop forever. */
  private async send(path: string, init: RequestInit, timeoutMs = CALL_TIMEOUT_MS): Promise<Response> {
    const base = this.baseUrl;
    const deadline = AbortSignal.timeout(timeoutMs);
    try {
      const res = await this.session.fetch(base + path, { ...init, signal: init.signal ? AbortSignal.any([init.signal, deadline]) : deadline });
      // A replica that is shutting down or has lost its store: try another next time.
      if (res.status === 503) this.failOver(base);
      return res;
    } catch (err) {
      if (!init.signal?.aborted) this.failOver(base);
      throw err;
    }
  }

  private failOver(from: string): void {
    if (this.baseUrl === from) this.current = (this.current + 1) % this.baseUrls.length;
  }

  close(): void {
    this.session.close();
  }

  private open(certs: WorkloadCerts): Bun.FetchSession {
    return new Bun.FetchSession({
      tls: {
        cert: certs.chainPem,
        key: certs.keyPem,
        ca: certs.bundlePem,
        rejectUnauthorized: true,
        checkServerIdentity: expectPeer(controlPlaneId(certs.trustDomain), certs.trustDomain) as never,
      },
      keepAlive: { idleTimeout: 50 },
    });
  }
}

async function answer<T>(res: Response, path: string, maxBytes: number): Promise<T> {
  const text = await boundedText(res, maxBytes, path);
  if (!res.ok) {
    let message = text;
    try {
      message = (JSON.parse(text) as { error?: string }).error ?? text;
    } catch {
      // not JSON: keep the text
    }
    throw new ControlPlaneError(res.status, `${path}: ${res.status} ${message}`.trim());
  }
  return JSON.parse(text) as T;
}
