/**
 * The sidecar's side of the control plane: register and keep the lease alive, follow
 * config versions and acknowledge or refuse each, take the trust bundle sent with them,
 * renew the certificate at about half its life (taking only one for its own identity).
 * Every loop survives the control plane being gone or misbehaving: the proxy keeps serving
 * on its last config and certificate and reconnects with jittered backoff.
 */
import type { Logger } from "../../core/log.ts";
import { saveConfig, type SavedConfig } from "./saved-config.ts";
import { REFUSAL_REASON_CHARS, type Registration } from "../../control-plane/registration.ts";
import type { WorkloadCerts } from "../certs.ts";
import { Backoff } from "./backoff.ts";
import { certificateFromAnswer, requestCertificate, saveCertificate } from "./bootstrap.ts";
import { ControlPlaneError, MAX_CONFIG_ANSWER_BYTES, type ControlPlaneClient } from "./cp-client.ts";
import { readConfigAnswer, readLease, type ConfigAnswer } from "./answer-shapes.ts";
import { bundleUpdate, type BundleUpdate } from "./bundle-update.ts";
import { ConfigAcks, type ConfigAck } from "./config-acks.ts";
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
/**
 * A long poll is held until something changes. One that brings nothing to apply (a 304 or
 * the version it named, answered at once; a refused version) lets the next start only this
 * long after it did, or a misbehaving control plane would turn the loop hot. A version
 * applied is followed at once: changes in quick succession are the control plane's to pace.
 */
const MIN_POLL_INTERVAL_MS = 500;

export class ControlPlaneAgent {
  private stopped = false;
  private lease?: { leaseId: string; ttlMs: number };
  private poll = new AbortController();
  private timers = new Set<Timer>();
  /** The next renewal, unless one is under way: a trust bundle that drops this sidecar's root brings it forward. */
  private renewalTimer: Timer | undefined;
  private renewing = false;
  /** The bundle of the last config version applied: a renewal answer minted before it must not put older roots back. */
  private configBundle: string | undefined;
  /** Settles once a config version has been applied: only then is the endpoint offered to callers. */
  private applied: Promise<void>;
  private markApplied!: () => void;
  /** Applied and refused versions, told the control plane once registered: it records them beside the registration. */
  private acks: ConfigAcks;
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
    this.acks = new ConfigAcks((ack) => this.sendAck(ack), opts.log);
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
          this.lease = readLease(await client.post<unknown>("/v1/register", { registration, healthy }));
          log.info({ endpoint: `${registration.address}:${registration.port}`, leaseTtlMs: this.lease.ttlMs }, "registered with the control plane");
          this.acks.registered();
          await this.acks.flush();
        } else {
          await client.post("/v1/heartbeat", { registration, leaseId: this.lease.leaseId, healthy });
          // An acknowledgement that failed (the control plane was briefly away) is tried again with each heartbeat.
          if (this.acks.pending) await this.acks.flush();
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
    let nextPollAt = 0;
    while (!this.stopped) {
      try {
        const wait = nextPollAt - Date.now();
        if (wait > 0) await this.sleep(wait);
        if (this.stopped) return;
        nextPollAt = Date.now() + MIN_POLL_INTERVAL_MS;
        // Ask with the last version seen, applied or refused: a refused one is not sent again.
        const seen = this.rejected ?? this.version;
        if (seen) query.set("version", seen);
        const answer = await client.get<unknown>(`/v1/config?${query}`, this.poll.signal, POLL_WAIT_MS + 5_000, MAX_CONFIG_ANSWER_BYTES);
        const read = answer === undefined ? undefined : readConfigAnswer(answer);
        if (read?.kind === "unnamed") {
          // Not a snapshot, and naming no version that could be acknowledged: the same question would get the same answer.
          log.error({ reason: read.reason }, "config refused; the last good config keeps serving");
          this.markFirstConfig(); // heard, if not understood
          await this.sleep(backoff.next());
          continue;
        }
        backoff.reset();
        // Nothing new: a 304, or the version named sent back (a refused one is not refused, logged and acknowledged again).
        if (read === undefined || read.version === seen) {
          if (this.firstRefusal !== undefined) await this.sendAck({ version: this.rejected!, error: this.firstRefusal });
          continue;
        }
        const error = read.kind === "snapshot" ? await this.applySnapshot(read) : this.refuse(read.version, read.reason);
        if (error === undefined) nextPollAt = 0;
        // Applied or refused, the control plane has been heard.
        this.markFirstConfig();
        await this.acknowledge(read.version, error);
      } catch (err) {
        if (this.stopped) return;
        log.warn({ err: (err as Error).message }, "config stream interrupted; reconnecting");
        await this.sleep(backoff.next());
      }
    }
  }

  /** A version's documents and trust bundle, taken or refused together: undefined, or the reason it is refused. */
  private async applySnapshot(read: Extract<ConfigAnswer, { kind: "snapshot" }>): Promise<string | undefined> {
    let update: BundleUpdate = { kind: "same" };
    if (read.bundle !== undefined) {
      let base = this.opts.certs;
      update = await bundleUpdate(base, read.bundle);
      // A renewal that landed meanwhile put its own certificate in use: the bundle is checked against that one.
      while (base !== this.opts.certs) update = await bundleUpdate((base = this.opts.certs), read.bundle);
    }
    if (update.kind === "refused") return this.refuse(read.version, update.reason);
    const error = this.apply(read.version, read.documents);
    if (error !== undefined) return error;
    this.configBundle = read.bundle ?? this.configBundle;
    if (update.kind === "take") {
      this.useCerts(update.certs);
      this.opts.log.info({ version: read.version, roots: update.roots }, "trust bundle updated");
    } else if (update.kind === "renew") {
      this.opts.log.warn({ reason: update.reason }, "the trust bundle no longer holds this sidecar's root; renewing now");
      this.renewNow();
    }
    return undefined;
  }

  /** Applies a version's documents: undefined, or the reason they are refused. */
  private apply(version: string, documents: unknown[]): string | undefined {
    try {
      this.opts.target.applyConfig(documents, version);
    } catch (err) {
      return this.refuse(version, (err as Error).message);
    }
    this.version = version;
    this.rejected = this.firstRefusal = undefined;
    this.markApplied();
    this.opts.log.info({ version, documents: documents.length }, "config applied");
    this.save({ version, documents });
    return undefined;
  }

  private refuse(version: string, reason: string): string {
    this.rejected = version;
    this.opts.log.error({ version, reason }, "config refused; the last good config keeps serving");
    return reason;
  }

  /**
   * Refused before any config was applied, the proxy is not registered (it has nothing to
   * serve with): the control plane keeps that refusal on its own, reported again at every
   * poll. Any other outcome goes beside the registration: at once when registered, else
   * once it is; either way config keeps being followed.
   */
  private async acknowledge(version: string, error: string | undefined): Promise<void> {
    if (error !== undefined && this.version === undefined) {
      this.firstRefusal = error;
      await this.sendAck({ version, error });
      return;
    }
    this.acks.record(version, error);
    if (this.lease) await this.acks.flush();
  }

  /** Only the start of a long reason is kept and shown (one problem per document can run long): sent cut, so it is never refused for size. */
  private async sendAck({ version, error }: ConfigAck): Promise<void> {
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
    this.renewalTimer = t;
  }

  /** Renews at once; a renewal under way already brings the control plane's current bundle. */
  private renewNow(): void {
    if (this.renewing || this.stopped) return;
    if (this.renewalTimer !== undefined) {
      clearTimeout(this.renewalTimer);
      this.timers.delete(this.renewalTimer);
    }
    void this.renew();
  }

  private async renew(): Promise<void> {
    this.renewing = true;
    try {
      await this.renewUntilDone();
    } finally {
      this.renewing = false;
    }
  }

  private async renewUntilDone(): Promise<void> {
    const backoff = new Backoff(1000, 60_000);
    const { client, registration, log } = this.opts;
    while (!this.stopped) {
      try {
        const { keyPem, answer } = await requestCertificate(this.opts.certs.spiffeId, registration.service, (csr) =>
          client.post<unknown>("/v1/certificates/renew", { namespace: registration.namespace, service: registration.service, csr }),
        );
        // Checked against who this sidecar is and the roots it trusts now, not the answer's word.
        const renewed = await certificateFromAnswer(this.opts.certsDir, keyPem, answer, "/v1/certificates/renew", this.opts.certs);
        const certs = await this.withConfigBundle(renewed);
        this.useCerts(certs);
        log.info({ notAfter: certs.notAfter.toISOString() }, "certificate renewed");
        this.scheduleRenewal(certs);
        return;
      } catch (err) {
        if (this.stopped) return;
        log.warn({ err: (err as Error).message }, "certificate renewal failed; retrying");
        await this.sleep(backoff.next());
      }
    }
  }

  /**
   * A renewed certificate under the bundle of the config in force, if it verifies under it:
   * an answer signed before a root rotation reached its replica (or by a replica not yet told)
   * carries the old bundle, and would otherwise take the new root away again.
   */
  private async withConfigBundle(renewed: WorkloadCerts): Promise<WorkloadCerts> {
    if (this.configBundle === undefined) return renewed;
    const update = await bundleUpdate(renewed, this.configBundle);
    return update.kind === "take" ? update.certs : renewed;
  }

  /** In use first: the files are only for a restart, and failing to write them must not cost the certificate. */
  private useCerts(certs: WorkloadCerts): void {
    this.opts.certs = certs;
    this.opts.target.useCerts(certs);
    this.opts.client.useCerts(certs);
    this.keepForRestart(certs);
  }

  private keepForRestart(certs: WorkloadCerts): void {
    try {
      saveCertificate(this.opts.certsDir, certs);
    } catch (err) {
      this.opts.log.warn(
        { certsDir: this.opts.certsDir, err: (err as Error).message, notAfter: certs.notAfter.toISOString() },
        "the renewed certificate is in use but cannot be saved; a restart finds the previous one in the certificates directory",
      );
    }
  }
}
