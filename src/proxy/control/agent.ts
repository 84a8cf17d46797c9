/**
 * The sidecar's side of the control plane: register and keep the lease alive, follow
 * config versions and acknowledge or refuse each, renew the certificate at about half
 * its life. Every loop survives the control plane being gone: the proxy keeps serving
 * on its last config and certificate and reconnects with jittered backoff.
 */
import type { Logger } from "../../core/log.ts";
import { saveConfig, type SavedConfig } from "./saved-config.ts";
import { REFUSAL_REASON_CHARS, type Registration } from "../../control-plane/registration.ts";
import type { ProxySnapshot } from "../../control-plane/snapshot.ts";
import type { SignedCertificate } from "../../control-plane/signer.ts";
import type { WorkloadCerts } from "../certs.ts";
import { Backoff } from "./backoff.ts";
import { requestCertificate, saveCertificate } from "./bootstrap.ts";
import { ControlPlaneError, type ControlPlaneClient } from "./cp-client.ts";
import { timerDelay } from "../../core/timer-delay.ts";

export interface AgentTarget {
  /** Validates and applies a config version; throws with the reason to refuse it. */
  applyConfig(documents: unknown[], version: string): void;
  useCerts(certs: WorkloadCerts): void;
  healthy(): Promise<boolean>;
}

export interface AgentOptions {
  client: ControlPlaneClient;
  registration: Registration;
  calls?: string[];
  certs: WorkloadCerts;
  certsDir: string;
  target: AgentTarget;
  log: Logger;
}

const POLL_WAIT_MS = 25_000;

export class ControlPlaneAgent {
  private stopped = false;
  private lease?: { leaseId: string; ttlMs: number };
  private poll = new AbortController();
  private timers = new Set<Timer>();
  /** Settles once a config version has been applied: only then is the endpoint offered to callers. */
  private applied: Promise<void>;
  private markApplied!: () => void;
  /** Settles once registered: the control plane records acknowledgements beside the registration. */
  private registered: Promise<void>;
  private markRegistered!: () => void;
  private stopping: Promise<void> | undefined;
  /** Settles once the first config version has been handled, applied or refused. */
  readonly firstConfig: Promise<void>;
  private markFirstConfig!: () => void;
  /** Config version applied, and the one last refused. */
  version?: string;
  rejected?: string;
  /** Why the first config was refused, while none has been applied: reported again at every poll, so the operator keeps seeing it. */
  private firstRefusal?: string;

  constructor(private opts: AgentOptions) {
    this.applied = new Promise((resolve) => (this.markApplied = resolve));
    this.registered = new Promise((resolve) => (this.markRegistered = resolve));
    this.firstConfig = new Promise((resolve) => (this.markFirstConfig = resolve));
  }

  start(): void {
    void this.registerLoop();
    void this.configLoop();
    this.scheduleRenewal(this.opts.certs);
  }

  /** On drain: stop following, and take this endpoint out of discovery at once. Every call waits for the one deregistration. */
  stop(): Promise<void> {
    this.stopping ??= this.leave();
    return this.stopping;
  }

  private async leave(): Promise<void> {
    this.stopped = true;
    this.poll.abort();
    for (const t of this.timers) clearTimeout(t);
    if (this.lease) {
      await this.opts.client.post("/v1/deregister", { registration: this.opts.registration, leaseId: this.lease.leaseId }).catch((err) => {
        this.opts.log.warn({ err: (err as Error).message }, "deregister failed; the lease will lapse");
      });
    }
    this.opts.client.close();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }

  /** Registers once the first config is applied: before it, the inbound refuses every request (no policy known yet). */
  private async registerLoop(): Promise<void> {
    await this.applied;
    const backoff = new Backoff();
    const { client, registration, log } = this.opts;
    while (!this.stopped) {
      try {
        const healthy = await this.opts.target.healthy();
        if (!this.lease) {
          this.lease = await client.post("/v1/register", { registration, healthy });
          log.info({ endpoint: `${registration.address}:${registration.port}` }, "registered with the control plane");
          this.markRegistered();
        } else {
          await client.post("/v1/heartbeat", { registration, leaseId: this.lease.leaseId, healthy });
        }
        backoff.reset();
        await this.sleep(this.lease!.ttlMs / 3);
      } catch (err) {
        if (this.stopped) return;
        // A lapsed lease (control plane down longer than the TTL) means registering anew.
        if (err instanceof ControlPlaneError && err.status === 410) this.lease = undefined;
        log.warn({ err: (err as Error).message }, "control plane unreachable for registration; retrying");
        // While a lease may still be alive, retry within its TTL: a control plane that
        // comes back (its store renews leases on restart) must hear from us before it lapses.
        await this.sleep(Math.min(backoff.next(), this.lease ? this.lease.ttlMs / 3 : Infinity));
      }
    }
  }

  private async configLoop(): Promise<void> {
    const backoff = new Backoff();
    const { client, registration, log } = this.opts;
    const query = new URLSearchParams({ namespace: registration.namespace, service: registration.service, waitMs: String(POLL_WAIT_MS) });
    if (this.opts.calls) query.set("calls", this.opts.calls.join(","));
    while (!this.stopped) {
      try {
        // Ask with the last version seen, applied or refused: a refused one is not sent again.
        const seen = this.rejected ?? this.version;
        if (seen) query.set("version", seen);
        const snap = await client.get<ProxySnapshot>(`/v1/config?${query}`, this.poll.signal, POLL_WAIT_MS + 5_000);
        backoff.reset();
        if (!snap) {
          if (this.firstRefusal !== undefined) await this.ack(this.rejected!, this.firstRefusal);
          continue;
        }
        let error: string | undefined;
        try {
          this.opts.target.applyConfig(snap.documents, snap.version);
          this.version = snap.version;
          this.rejected = this.firstRefusal = undefined;
          this.markApplied();
          log.info({ version: snap.version, documents: snap.documents.length }, "config applied");
          this.save({ version: snap.version, documents: snap.documents });
        } catch (err) {
          error = (err as Error).message;
          this.rejected = snap.version;
          log.error({ version: snap.version, reason: error }, "config refused; the last good config keeps serving");
        }
        // Applied or refused, the control plane has been heard.
        this.markFirstConfig();
        // Refused before any config was applied, the proxy is not registered: the control plane keeps the refusal on its own.
        if (error !== undefined && this.version === undefined) this.firstRefusal = error;
        else await this.registered;
        await this.ack(snap.version, error);
      } catch (err) {
        if (this.stopped) return;
        log.warn({ err: (err as Error).message }, "config stream interrupted; reconnecting");
        await this.sleep(backoff.next());
      }
    }
  }

  /** Only the start of a long reason is kept and shown (one problem per document can run long): sent cut, so it is never refused for size. */
  private async ack(version: string, error: string | undefined): Promise<void> {
    const { client, registration, calls } = this.opts;
    const reason = error !== undefined && error.length > REFUSAL_REASON_CHARS ? `${error.slice(0, REFUSAL_REASON_CHARS - 40)} … (${error.length} characters in all)` : error;
    await client.post("/v1/config/ack", { registration, version, calls, ...(reason !== undefined ? { error: reason } : {}) });
  }

  /** Kept for a restart while the control plane is unreachable (saved-config.ts); failing to save costs only that. */
  private save(config: SavedConfig): void {
    try {
      saveConfig(this.opts.certsDir, config);
    } catch (err) {
      this.opts.log.warn({ certsDir: this.opts.certsDir, err: (err as Error).message }, "cannot save the applied config for a restart");
    }
  }

  private scheduleRenewal(certs: WorkloadCerts): void {
    const left = certs.notAfter.getTime() - Date.now();
    const at = left * (0.45 + Math.random() * 0.1);
    const t = setTimeout(() => {
      this.timers.delete(t);
      void this.renew();
    }, timerDelay(at, 1000));
    this.timers.add(t);
  }

  private async renew(): Promise<void> {
    const backoff = new Backoff(1000, 60_000);
    const { client, registration, log } = this.opts;
    while (!this.stopped) {
      try {
        const { keyPem, signed } = await requestCertificate(this.opts.certs.spiffeId, registration.service, (csr) =>
          client.post<SignedCertificate>("/v1/certificates/renew", { namespace: registration.namespace, service: registration.service, csr }),
        );
        const certs = await saveCertificate(this.opts.certsDir, keyPem, signed);
        this.opts.certs = certs;
        this.opts.target.useCerts(certs);
        client.useCerts(certs);
        log.info({ notAfter: certs.notAfter.toISOString() }, "certificate renewed");
        this.scheduleRenewal(certs);
        return;
      } catch (err) {
        log.warn({ err: (err as Error).message }, "certificate renewal failed; retrying");
        await this.sleep(backoff.next());
      }
    }
  }
}
