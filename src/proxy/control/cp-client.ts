/**
 * The sidecar's client for the control plane's mTLS API. It presents the workload's
 * certificate and accepts only a server proving the control plane's SPIFFE ID; the
 * connection is pooled, so the check runs once per connection.
 */
import { controlPlaneId } from "../../control-plane/identity.ts";
import type { WorkloadCerts } from "../certs.ts";
import { expectPeer } from "../destinations.ts";

export class ControlPlaneError extends Error {
  override readonly name = "ControlPlaneError";
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export class ControlPlaneClient {
  private session: Bun.FetchSession;

  constructor(private baseUrl: string, private certs: WorkloadCerts) {
    this.session = this.open(certs);
  }

  /** After renewal: new connections present the new certificate. */
  useCerts(certs: WorkloadCerts): void {
    const old = this.session;
    this.certs = certs;
    this.session = this.open(certs);
    old.close();
  }

  async post<T>(path: string, body: unknown): Promise<T> {
    const res = await this.session.fetch(this.baseUrl + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    return answer<T>(res, path);
  }

  /** GET; undefined on 304 (nothing new). */
  async get<T>(path: string, signal?: AbortSignal): Promise<T | undefined> {
    const res = await this.session.fetch(this.baseUrl + path, { signal });
    if (res.status === 304) return undefined;
    return answer<T>(res, path);
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

async function answer<T>(res: Response, path: string): Promise<T> {
  const text = await res.text();
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
