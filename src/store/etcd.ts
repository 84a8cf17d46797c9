/**
 * The store on an etcd v3 cluster, for several control-plane replicas at once. Speaks the
 * JSON gateway every etcd member serves next to gRPC (no client library: the few calls we
 * need are plain HTTP, and Bun's fetch streams the watch).
 *
 * Conditional writes are transactions: putIfAbsent compares create_revision = 0, putIfVersion
 * compares mod_revision. If such a write's answer is lost with its member, it is not blindly
 * repeated (the repeat would fail its own compare and report a lost race); it is repeated once
 * more and, when the compare then fails, judged by whether the key now holds our value.
 */
import { StoreError } from "./errors.ts";
import { AmbiguousResult, EtcdClient, type EtcdClientOptions } from "./etcd-client.ts";
import { b64, int, prefixRange, toKeyValue, unb64, type RawHeader, type RawKv } from "./etcd-codec.ts";
import { EtcdWatch } from "./etcd-watch.ts";
import type { KeyValue, LeaseGrant, LeaseId, ListResult, PutOptions, Store, WatchHandlers } from "./store.ts";
import type { Logger } from "../core/log.ts";
import { reportEnd } from "./watch-delivery.ts";

export type EtcdStoreOptions = EtcdClientOptions;

interface RangeResponse {
  header: RawHeader;
  kvs?: RawKv[];
}

interface TxnResponse {
  header: RawHeader;
  succeeded?: boolean;
  responses?: { response_range?: { kvs?: RawKv[] } }[];
}

type Compare = { target: "CREATE"; create_revision: string } | { target: "MOD"; mod_revision: string };

/** How many times a conditional write whose outcome was lost is sent again before giving up. */
const AMBIGUOUS_RETRIES = 5;

export class EtcdStore implements Store {
  private readonly client: EtcdClient;
  private readonly watches = new Set<EtcdWatch>();
  private readonly log: Logger | undefined;
  private closed = false;

  constructor(opts: EtcdStoreOptions) {
    this.client = new EtcdClient(opts);
    this.log = opts.log;
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const r = await this.call<RangeResponse>("/v3/kv/range", { key: b64(key) });
    return r.kvs?.[0] ? toKeyValue(r.kvs[0]) : undefined;
  }

  async list(prefix: string): Promise<ListResult> {
    const r = await this.call<RangeResponse>("/v3/kv/range", prefixRange(prefix));
    return { kvs: (r.kvs ?? []).map(toKeyValue), revision: int(r.header.revision) };
  }

  async put(key: string, value: string, opts: PutOptions = {}): Promise<number> {
    const r = await this.call<{ header: RawHeader }>("/v3/kv/put", putRequest(key, value, opts));
    return int(r.header.revision);
  }

  putIfAbsent(key: string, value: string, opts: PutOptions = {}): Promise<boolean> {
    return this.putIf(key, value, { target: "CREATE", create_revision: "0" }, opts);
  }

  putIfVersion(key: string, value: string, modRevision: number, opts: PutOptions = {}): Promise<boolean> {
    return this.putIf(key, value, { target: "MOD", mod_revision: String(modRevision) }, opts);
  }

  async delete(key: string): Promise<boolean> {
    const r = await this.call<{ deleted?: string }>("/v3/kv/deleterange", { key: b64(key) });
    return int(r.deleted) > 0;
  }

  async grant(ttlMs: number): Promise<LeaseGrant> {
    if (!(ttlMs > 0) || !Number.isFinite(ttlMs)) throw new StoreError("rejected", `lease TTL must be a positive number of milliseconds, got ${ttlMs}`);
    // etcd counts whole seconds and raises short TTLs to its minimum; report what it granted.
    // Retried like a read: a grant applied twice leaves one unused lease, which lapses alone.
    const r = await this.call<{ ID: string; TTL?: string }>("/v3/lease/grant", { TTL: String(Math.ceil(ttlMs / 1000)) });
    return { id: r.ID, ttlMs: int(r.TTL) * 1000 };
  }

  async keepAlive(id: LeaseId): Promise<number> {
    const r = await this.call<{ TTL?: string }>("/v3/lease/keepalive", { ID: id });
    const ttl = int(r.TTL);
    if (ttl <= 0) throw new StoreError("lease-not-found", `lease ${id} not found (expired or revoked)`);
    return ttl * 1000;
  }

  async revoke(id: LeaseId): Promise<void> {
    try {
      await this.call("/v3/lease/revoke", { ID: id });
    } catch (err) {
      if (!(err instanceof StoreError && err.code === "lease-not-found")) throw err;
    }
  }

  async revision(): Promise<number> {
    const r = await this.call<RangeResponse>("/v3/kv/range", { key: b64("\0"), count_only: true });
    return int(r.header.revision);
  }

  watch(prefix: string, handlers: WatchHandlers, fromRevision?: number): () => void {
    if (this.closed) {
      queueMicrotask(() => reportEnd(handlers, closedError()));
      return () => {};
    }
    const w = new EtcdWatch(this.client, prefix, handlers, fromRevision, (done) => this.watches.delete(done), this.log);
    this.watches.add(w);
    return () => w.cancel();
  }

  async compact(revision: number): Promise<void> {
    try {
      await this.call("/v3/kv/compaction", { revision: String(revision) });
    } catch (err) {
      // Compacting to a revision already compacted away: the history is already gone.
      if (!(err instanceof StoreError && err.code === "compacted")) throw err;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of [...this.watches]) w.end(closedError());
  }

  /**
   * Reads and the writes that may be repeated: a repeated put or delete leaves the state it
   * was asked for (at one more revision), as if it had simply come a moment later.
   */
  private call<T>(path: string, body: unknown): Promise<T> {
    if (this.closed) return Promise.reject(closedError());
    return this.client.call<T>(path, body, "retry");
  }

  private async putIf(key: string, value: string, compare: Compare, opts: PutOptions): Promise<boolean> {
    if (this.closed) throw closedError();
    const txn = {
      compare: [{ key: b64(key), result: "EQUAL", ...compare }],
      success: [{ request_put: putRequest(key, value, opts) }],
      failure: [{ request_range: { key: b64(key) } }],
    };
    for (let lost = 0; ; lost++) {
      let r: TxnResponse;
      try {
        r = await this.client.call<TxnResponse>("/v3/kv/txn", txn, "at-most-once");
      } catch (err) {
        if (!(err instanceof AmbiguousResult)) throw err;
        this.log?.warn({ key, reason: err.message }, "etcd: outcome of a conditional write was lost; checking");
        if (lost >= AMBIGUOUS_RETRIES) throw new StoreError("unavailable", `etcd: conditional write of ${key} may or may not have been applied: ${err.message}`);
        continue;
      }
      if (r.succeeded) return true;
      if (lost === 0) return false;
      // An earlier attempt may be what made the compare fail: it was, if the key holds our value.
      // (A writer putting the identical value in between is indistinguishable, and harmless:
      // callers that must tell claimants apart put a value unique to the claimant.)
      const current = r.responses?.[0]?.response_range?.kvs?.[0];
      return current !== undefined && unb64(current.value) === value;
    }
  }
}

function putRequest(key: string, value: string, opts: PutOptions): Record<string, string> {
  return { key: b64(key), value: b64(value), ...(opts.lease === undefined ? {} : { lease: opts.lease }) };
}

function closedError(): StoreError {
  return new StoreError("closed", "the store is closed");
}
