/**
 * One simulated sidecar, doing what src/proxy/control/agent.ts does against the real API:
 * register under a lease and heartbeat it, long-poll /v1/config with the last version,
 * acknowledge every version. It records when each version arrived and when its ack was
 * accepted; it applies nothing.
 */
import type { Registration } from "../../src/control-plane/registration.ts";
import { Backoff } from "../../src/proxy/control/backoff.ts";
import { ControlPlaneError, type ControlPlaneClient } from "../../src/proxy/control/cp-client.ts";
import type { SimErrors, VersionTime } from "./sim-protocol.ts";

const POLL_WAIT_MS = 25_000;
const HISTORY = 32;

export class SimProxy {
  private lease?: { leaseId: string; ttlMs: number };
  private stopped = false;
  private poll = new AbortController();
  private timers = new Set<Timer>();
  readonly history: ({ version: string } & VersionTime)[] = [];

  constructor(private client: ControlPlaneClient, readonly registration: Registration, private errors: SimErrors) {}

  get registered(): boolean {
    return this.lease !== undefined;
  }

  get last(): ({ version: string } & VersionTime) | undefined {
    return this.history.at(-1);
  }

  /** Registers, retrying a few times; the heartbeat loop then keeps the lease alive. */
  async register(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        this.lease = await this.client.post("/v1/register", { registration: this.registration, healthy: true });
        void this.heartbeatLoop();
        return;
      } catch (err) {
        this.fail("register", err);
        if (attempt >= 4 || this.stopped) throw err;
        await this.sleep(250 * 2 ** attempt);
      }
    }
  }

  subscribe(): void {
    void this.configLoop();
  }

  stop(): void {
    this.stopped = true;
    this.poll.abort();
    for (const t of this.timers) clearTimeout(t);
  }

  private fail(kind: keyof Omit<SimErrors, "messages">, err: unknown): void {
    if (this.stopped) return;
    this.errors[kind]++;
    const text = `${kind}: ${(err as Error).message}`.replace(/\d+/g, "N").slice(0, 160);
    const m = this.errors.messages;
    if (text in m || Object.keys(m).length < 20) m[text] = (m[text] ?? 0) + 1;
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

  /** As the agent's registerLoop: beat every third of the TTL; after a failure retry with backoff, within the TTL. */
  private async heartbeatLoop(): Promise<void> {
    const backoff = new Backoff();
    const ttlMs = this.lease!.ttlMs;
    // Spread the first beat over the interval, so N proxies do not beat in step.
    await this.sleep(Math.random() * (ttlMs / 3));
    while (!this.stopped) {
      try {
        if (!this.lease) this.lease = await this.client.post("/v1/register", { registration: this.registration, healthy: true });
        else await this.client.post("/v1/heartbeat", { registration: this.registration, leaseId: this.lease.leaseId, healthy: true });
        backoff.reset();
        await this.sleep(ttlMs / 3);
      } catch (err) {
        this.fail("heartbeat", err);
        // A lapsed lease (410) means registering anew, as the agent does.
        if (err instanceof ControlPlaneError && err.status === 410) this.lease = undefined;
        await this.sleep(Math.min(backoff.next(), ttlMs / 3));
      }
    }
  }

  private async configLoop(): Promise<void> {
    const backoff = new Backoff();
    const query = new URLSearchParams({ namespace: this.registration.namespace, service: this.registration.service, waitMs: String(POLL_WAIT_MS) });
    while (!this.stopped) {
      const seen = this.last?.version;
      if (seen) query.set("version", seen);
      let version: string;
      try {
        const snap = await this.client.get<{ version: string }>(`/v1/config?${query}`, this.poll.signal, POLL_WAIT_MS + 5_000);
        if (!snap) continue;
        version = snap.version;
      } catch (err) {
        this.fail("poll", err);
        if (!this.stopped) await this.sleep(backoff.next());
        continue;
      }
      const receivedAt = Date.now();
      try {
        await this.client.post("/v1/config/ack", { registration: this.registration, version });
        this.history.push({ version, receivedAt, ackedAt: Date.now() });
        if (this.history.length > HISTORY) this.history.shift();
        backoff.reset();
      } catch (err) {
        // Not acknowledged: unlike the agent, ask again with the old version, so it is resent and acked.
        this.fail("ack", err);
        if (!this.stopped) await this.sleep(backoff.next());
      }
    }
  }
}
