/**
 * etcd's alarms (NOSPACE: out of space, every write refused; CORRUPT: a member's data differs),
 * read through the gateway as 'etcdctl alarm list' does. A control plane's status asks on
 * every call, so a result is kept for a few seconds (the list goes through raft) and one
 * read is bounded by a short timeout: an unreachable etcd is reported, not waited for.
 */
import { errorMessage } from "../core/errors.ts";
import { EtcdClient, type EtcdTls } from "./etcd-client.ts";

export interface AlarmCheck {
  /** Alarm names raised anywhere in the cluster, e.g. ["NOSPACE"]; empty when none. */
  alarms: string[];
  /** Wall-clock time (ms) of the read. */
  checkedAt: number;
  /** Why the alarms could not be read; `alarms` is then empty, not known to be. */
  error?: string;
}

export interface EtcdAlarmOptions {
  endpoints: string[];
  tls?: EtcdTls;
  /** How long a read is reused. */
  cacheMs?: number;
  /** How long one read may take before it counts as failed. */
  timeoutMs?: number;
  now?: () => number;
}

interface AlarmResponse {
  alarms?: { memberID?: string; alarm?: string }[];
}

export class EtcdAlarms {
  private readonly client: EtcdClient;
  private readonly cacheMs: number;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private last: AlarmCheck | undefined;
  private reading: Promise<AlarmCheck> | undefined;

  constructor(opts: EtcdAlarmOptions) {
    // A client of its own: the store's would retry for 15 s, and its member is the store's business.
    this.client = new EtcdClient({ endpoints: opts.endpoints, tls: opts.tls });
    this.cacheMs = opts.cacheMs ?? 3_000;
    this.timeoutMs = opts.timeoutMs ?? 1_500;
    this.now = opts.now ?? Date.now;
  }

  /** The last read, if any: never waits. */
  get current(): AlarmCheck | undefined {
    return this.last;
  }

  /** The alarms, read now unless the last read is recent; callers at the same moment share one read. */
  check(): Promise<AlarmCheck> {
    if (this.last && this.now() - this.last.checkedAt < this.cacheMs) return Promise.resolve(this.last);
    this.reading ??= this.read().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async read(): Promise<AlarmCheck> {
    try {
      const r = await this.client.callOnce<AlarmResponse>("/v3/maintenance/alarm", { action: "GET" }, this.timeoutMs);
      // One entry per member and alarm: a cluster out of space lists NOSPACE once per member.
      const alarms = [...new Set((r.alarms ?? []).flatMap((a) => (a.alarm ? [a.alarm] : [])))].sort();
      this.last = { alarms, checkedAt: this.now() };
    } catch (err) {
      this.last = { alarms: [], checkedAt: this.now(), error: errorMessage(err) };
    }
    return this.last;
  }
}
