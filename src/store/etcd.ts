/**
 * The store on an etcd v3 cluster, for several control-plane replicas at once. Speaks the
 * JSON gateway every etcd member serves next to gRPC (no client library: the few calls we
 * need are plain HTTP, and Bun's fetch streams the watch).
 *
 * Conditional writes are transactions: putIfAbsent compares create_revision = 0, putIfVersion
 * and commit compare mod_revision (commit: of its guard key, which it rewrites with the rest).
 * If such a write's answer is lost with its member, it is not blindly repeated (the repeat
 * would fail its own compare and report a lost race); it is repeated once more and, when the
 * compare then fails, judged by whether the key (the guard) now holds our value.
 */
import { checkCommitOps } from "./commit-ops.ts";
import { StoreError } from "./errors.ts";
import { AmbiguousResult, EtcdClient, type EtcdClientOptions } from "./etcd-client.ts";
import { b64, int, prefixRange, toKeyValue, unb64, type RawHeader, type RawKv } from "./etcd-codec.ts";
import { EtcdWatch } from "./etcd-watch.ts";
import type { CommitGuard, KeyValue, LeaseGrant, LeaseId, ListResult, PutOptions, Store, WatchHandlers, WriteOp } from "./store.ts";
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

/**
 * etcd's refusals of a transaction past its limits, made before anything is applied: past
 * --max-txn-ops, past --max-request-bytes (proposal), and past that plus gRPC's 512 KiB
 * allowance (gRPC turns it away on receipt, as RESOURCE_EXHAUSTED, which reads as transient).
 */
const TOO_LARGE = /too many operations in txn request|request is too large|received message larger than max/;

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
    return this.txnIf(key, value, { target: "CREATE", create_revision: "0" }, [{ request_put: putRequest(key, value, opts) }], `conditional write of ${key}`);
  }

  putIfVersion(key: string, value: string, modRevision: number, opts: PutOptions = {}): Promise<boolean> {
    return this.txnIf(key, value, { target: "MOD", mod_revision: String(modRevision) }, [{ request_put: putRequest(key, value, opts) }], `conditional write of ${key}`);
  }

  async commit(guard: CommitGuard, ops: WriteOp[]): Promise<boolean> {
    checkCommitOps(guard, ops);
    const nonce = crypto.randomUUID();
    // The guard last: a watcher meets it after the rest of the revision.
    const success = [...ops.map((op) => ("put" in op ? { request_put: putRequest(op.put, op.value, {}) } : { request_delete_range: { key: b64(op.delete) } })), { request_put: putRequest(guard.key, nonce, {}) }];
    return this.txnIf(guard.key, nonce, { target: "MOD", mod_revision: String(guard.modRevision) }, success, `commit of ${ops.length} write${ops.length === 1 ? "" : "s"} under ${guard.key}`);
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

  /**
   * One transaction: `success` if `key`'s `compare` holds (`success` writes `value` to `key`),
   * else nothing. `what` names it in errors.
   */
  private async txnIf(key: string, value: string, compare: Compare, success: unknown[], what: string): Promise<boolean> {
    if (this.closed) throw closedError();
    const txn = {
      compare: [{ key: b64(key), result: "EQUAL", ...compare }],
      success,
      failure: [{ request_range: { key: b64(key) } }],
    };
    // One retry window for the whole write, lost answers included: not a fresh one per attempt.
    const deadline = performance.now() + this.client.retryForMs;
    for (let lost = 0; ; lost++) {
      let r: TxnResponse;
      try {
        r = await this.client.call<TxnResponse>("/v3/kv/txn", txn, "at-most-once", deadline);
      } catch (err) {
        const reason = (err as Error).message;
        if (TOO_LARGE.test(reason) && (err instanceof AmbiguousResult || (err instanceof StoreError && err.code === "rejected")))
          throw new StoreError("too-large", `etcd refused the ${what} (${success.length} operations, ${JSON.stringify(txn).length} bytes) as one transaction, nothing written: ${reason}; etcd takes up to --max-txn-ops operations (default 128) and --max-request-bytes (default 1.5 MiB) in one`, undefined, { cause: err });
        if (lost > 0 && err instanceof StoreError && err.code === "unavailable")
          throw new StoreError("unavailable", `etcd: ${what} may or may not have been applied (an earlier answer was lost): ${reason}`, undefined, { cause: err, outcomeUnknown: true });
        if (!(err instanceof AmbiguousResult)) throw err;
        this.log?.warn({ key, reason }, "etcd: outcome of a conditional write was lost; checking");
        if (lost >= AMBIGUOUS_RETRIES || performance.now() >= deadline) throw new StoreError("unavailable", `etcd: ${what} may or may not have been applied: ${reason}`, undefined, { outcomeUnknown: true });
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
