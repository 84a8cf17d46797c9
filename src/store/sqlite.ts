/**
 * The embedded store: bun:sqlite in a data directory, for a single control-plane process.
 * Every change is one SQLite transaction that bumps the persisted revision and appends to
 * the event history, so watches resume after a restart. Leases keep their wall-clock expiry
 * on disk, but opening the store gives every lease a fresh TTL, as etcd does when its
 * leader changes: leases are kept alive through this process, so while it was down no
 * holder could renew, and dropping them would wipe every registration on a restart.
 * Lapsed leases are swept by a timer and before every operation, so a lapsed lease's keys
 * are never returned.
 */
import type { Database } from "bun:sqlite";
import type { Logger } from "../core/log.ts";
import { checkCommitOps } from "./commit-ops.ts";
import { StoreError } from "./errors.ts";
import { stringPrefixEnd } from "./prefix.ts";
import { openDatabase } from "./sqlite-schema.ts";
import type { CommitGuard, KeyValue, LeaseGrant, LeaseId, ListResult, PutOptions, Store, WatchEvent, WatchHandlers, WriteOp } from "./store.ts";
import { compactedError, WatchHub } from "./watch-hub.ts";
import { reportEnd } from "./watch-delivery.ts";
import { timerDelay } from "../core/timer-delay.ts";

export interface SqliteStoreOptions {
  /** Wall-clock milliseconds. Not the monotonic clock: expiry times outlive the process. */
  now?: () => number;
  /** Revisions of history kept for watches that resume; older history is compacted. */
  historyRevisions?: number;
  log?: Logger;
}

interface KvRow {
  key: string;
  value: string;
  create_rev: number;
  mod_rev: number;
  version: number;
  lease: string | null;
}

interface EventRow {
  rev: number;
  key: string;
  type: number;
  value: string | null;
  create_rev: number | null;
  version: number | null;
  lease: string | null;
}

const KV_COLUMNS = "key, value, create_rev, mod_rev, version, lease";

export function openSqliteStore(dir: string, opts: SqliteStoreOptions = {}): SqliteStore {
  return new SqliteStore(openDatabase(dir), dir, opts);
}

export class SqliteStore implements Store {
  private readonly hub = new WatchHub();
  private readonly now: () => number;
  private readonly historyRevisions: number;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt = Infinity;
  private closed = false;

  constructor(
    private readonly db: Database,
    readonly dir: string,
    opts: SqliteStoreOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.historyRevisions = opts.historyRevisions ?? 10_000;
    const renewed = this.db.query("UPDATE leases SET expires_at = ?1 + ttl_ms").run(this.now()).changes;
    if (renewed) opts.log?.info({ leases: renewed, dir }, "store: leases given a fresh TTL after a restart");
    this.scheduleExpiry();
  }

  async get(key: string): Promise<KeyValue | undefined> {
    this.ready();
    const row = this.db.query<KvRow, [string]>(`SELECT ${KV_COLUMNS} FROM kv WHERE key = ?1`).get(key);
    return row ? toKv(row) : undefined;
  }

  async list(prefix: string): Promise<ListResult> {
    this.ready();
    const end = stringPrefixEnd(prefix);
    const rows = end === undefined
      ? this.db.query<KvRow, [string]>(`SELECT ${KV_COLUMNS} FROM kv WHERE key >= ?1 ORDER BY key`).all(prefix)
      : this.db.query<KvRow, [string, string]>(`SELECT ${KV_COLUMNS} FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key`).all(prefix, end);
    return { kvs: rows.map(toKv), revision: this.meta("revision") };
  }

  async put(key: string, value: string, opts: PutOptions = {}): Promise<number> {
    this.ready();
    this.checkLease(opts.lease);
    return this.transact((rev) => [this.writeKey(rev, key, value, opts.lease)]);
  }

  async putIfAbsent(key: string, value: string, opts: PutOptions = {}): Promise<boolean> {
    return this.putIfVersion(key, value, 0, opts);
  }

  async putIfVersion(key: string, value: string, modRevision: number, opts: PutOptions = {}): Promise<boolean> {
    this.ready();
    this.checkLease(opts.lease);
    const rev = this.transact((rev) => ((this.row(key)?.mod_rev ?? 0) === modRevision ? [this.writeKey(rev, key, value, opts.lease)] : []));
    return rev !== 0;
  }

  async delete(key: string): Promise<boolean> {
    this.ready();
    return this.transact((rev) => (this.row(key) ? [this.removeKey(rev, key)] : [])) !== 0;
  }

  async commit(guard: CommitGuard, ops: WriteOp[]): Promise<boolean> {
    this.ready();
    checkCommitOps(guard, ops);
    const rev = this.transact((rev) => {
      if ((this.row(guard.key)?.mod_rev ?? 0) !== guard.modRevision) return [];
      const events = ops.flatMap((op) => ("put" in op ? [this.writeKey(rev, op.put, op.value, undefined)] : this.row(op.delete) ? [this.removeKey(rev, op.delete)] : []));
      return [...events, this.writeKey(rev, guard.key, crypto.randomUUID(), undefined)];
    });
    return rev !== 0;
  }

  async grant(ttlMs: number): Promise<LeaseGrant> {
    this.ready();
    if (!(ttlMs > 0) || !Number.isFinite(ttlMs)) throw new StoreError("rejected", `lease TTL must be a positive number of milliseconds, got ${ttlMs}`);
    const ttl = Math.ceil(ttlMs);
    const id = this.db.transaction(() => {
      const seq = this.meta("lease_seq") + 1;
      this.setMeta("lease_seq", seq);
      this.db.query("INSERT INTO leases (id, ttl_ms, expires_at) VALUES (?1, ?2, ?3)").run(String(seq), ttl, this.now() + ttl);
      return String(seq);
    })();
    this.scheduleExpiry();
    return { id, ttlMs: ttl };
  }

  async keepAlive(id: LeaseId): Promise<number> {
    this.ready();
    const lease = this.db.query<{ ttl_ms: number }, [string]>("SELECT ttl_ms FROM leases WHERE id = ?1").get(id);
    if (!lease) throw leaseNotFound(id);
    // Only moves expiry later, so the armed timer may fire early; it then re-arms.
    this.db.query("UPDATE leases SET expires_at = ?2 WHERE id = ?1").run(id, this.now() + lease.ttl_ms);
    return lease.ttl_ms;
  }

  async revoke(id: LeaseId): Promise<void> {
    this.ready();
    this.revokeLease(id);
  }

  async revision(): Promise<number> {
    this.ready();
    return this.meta("revision");
  }

  watch(prefix: string, handlers: WatchHandlers, fromRevision?: number): () => void {
    if (this.closed) return this.endSoon(handlers, closedError());
    this.expireLeases();
    if (fromRevision === undefined) return this.hub.add(prefix, handlers, this.meta("revision") + 1, []);
    const from = Math.max(1, Math.floor(fromRevision));
    const compacted = this.meta("compact_revision");
    if (from < compacted) return this.endSoon(handlers, compactedError(from, compacted));
    return this.hub.add(prefix, handlers, from, this.history(prefix, from));
  }

  async compact(revision: number): Promise<void> {
    this.ready();
    const current = this.meta("revision");
    if (revision > current) throw new StoreError("rejected", `cannot compact to revision ${revision}: the store is at ${current}`);
    this.compactTo(revision);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.hub.endAll(closedError());
    this.db.close();
  }

  /** Every operation starts here: refuse after close, and drop lapsed leases first. */
  private ready(): void {
    if (this.closed) throw closedError();
    this.expireLeases();
  }

  /**
   * Runs `mutate` in one transaction at the next revision. The revision is taken only if
   * `mutate` changed something (returned events); then the events are recorded and published.
   * Returns that revision, or 0 when nothing changed.
   */
  private transact(mutate: (rev: number) => WatchEvent[]): number {
    const events = this.db.transaction(() => {
      const rev = this.meta("revision") + 1;
      const evs = mutate(rev);
      if (!evs.length) return evs;
      const insert = this.db.query("INSERT INTO events (rev, key, type, value, create_rev, version, lease) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
      for (const ev of evs) {
        if (ev.type === "put") insert.run(rev, ev.key, 0, ev.value, ev.kv.createRevision, ev.kv.version, ev.kv.lease ?? null);
        else insert.run(rev, ev.key, 1, null, null, null, null);
      }
      this.setMeta("revision", rev);
      return evs;
    })();
    const rev = events[0]?.revision ?? 0;
    if (rev) {
      this.hub.publish(events);
      const compacted = this.meta("compact_revision");
      // Compact in batches of a tenth of the window, not on every write.
      if (rev - compacted > this.historyRevisions * 1.1) this.compactTo(rev - this.historyRevisions);
    }
    return rev;
  }

  private writeKey(rev: number, key: string, value: string, lease: LeaseId | undefined): WatchEvent {
    const prev = this.row(key);
    const kv: KeyValue = { key, value, createRevision: prev?.create_rev ?? rev, modRevision: rev, version: (prev?.version ?? 0) + 1 };
    if (lease !== undefined) kv.lease = lease;
    this.db
      .query(`INSERT OR REPLACE INTO kv (${KV_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)`)
      .run(key, value, kv.createRevision, rev, kv.version, lease ?? null);
    return { type: "put", key, value, revision: rev, kv };
  }

  private removeKey(rev: number, key: string): WatchEvent {
    this.db.query("DELETE FROM kv WHERE key = ?1").run(key);
    return { type: "delete", key, revision: rev };
  }

  private row(key: string): KvRow | null {
    return this.db.query<KvRow, [string]>(`SELECT ${KV_COLUMNS} FROM kv WHERE key = ?1`).get(key);
  }

  private checkLease(id: LeaseId | undefined): void {
    if (id !== undefined && !this.db.query("SELECT 1 FROM leases WHERE id = ?1").get(id)) throw leaseNotFound(id);
  }

  /** Deletes the lease and its keys, all at one revision (as etcd does). */
  private revokeLease(id: LeaseId): void {
    this.transact((rev) => {
      const keys = this.db.query<{ key: string }, [string]>("SELECT key FROM kv WHERE lease = ?1 ORDER BY key").all(id);
      this.db.query("DELETE FROM leases WHERE id = ?1").run(id);
      return keys.map((k) => this.removeKey(rev, k.key));
    });
  }

  /** Returns how many leases lapsed. */
  private expireLeases(): number {
    const lapsed = this.db.query<{ id: string }, [number]>("SELECT id FROM leases WHERE expires_at <= ?1 ORDER BY expires_at").all(this.now());
    for (const { id } of lapsed) this.revokeLease(id);
    return lapsed.length;
  }

  /** Arms the timer for the earliest expiry unless it is already armed for that time or sooner. */
  private scheduleExpiry(): void {
    const next = this.db.query<{ at: number | null }, []>("SELECT MIN(expires_at) AS at FROM leases").get()?.at;
    if (next == null || next >= this.timerAt) return;
    clearTimeout(this.timer);
    this.timerAt = next;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      if (this.closed) return;
      this.expireLeases();
      this.scheduleExpiry();
    }, timerDelay(next - this.now() + 1));
    this.timer.unref(); // never the reason a process stays up
  }

  private history(prefix: string, from: number): WatchEvent[] {
    const end = stringPrefixEnd(prefix);
    const rows = end === undefined
      ? this.db.query<EventRow, [number, string]>("SELECT * FROM events WHERE rev >= ?1 AND key >= ?2 ORDER BY rev, key").all(from, prefix)
      : this.db.query<EventRow, [number, string, string]>("SELECT * FROM events WHERE rev >= ?1 AND key >= ?2 AND key < ?3 ORDER BY rev, key").all(from, prefix, end);
    return rows.map(toEvent);
  }

  private compactTo(revision: number): void {
    if (revision <= this.meta("compact_revision")) return;
    this.db.transaction(() => {
      this.db.query("DELETE FROM events WHERE rev < ?1").run(revision);
      this.setMeta("compact_revision", revision);
    })();
  }

  private endSoon(handlers: WatchHandlers, err: StoreError): () => void {
    let cancelled = false;
    queueMicrotask(() => cancelled || reportEnd(handlers, err));
    return () => {
      cancelled = true;
    };
  }

  private meta(name: string): number {
    return this.db.query<{ value: number }, [string]>("SELECT value FROM meta WHERE name = ?1").get(name)!.value;
  }

  private setMeta(name: string, value: number): void {
    this.db.query("UPDATE meta SET value = ?2 WHERE name = ?1").run(name, value);
  }
}

function toKv(row: KvRow): KeyValue {
  const kv: KeyValue = { key: row.key, value: row.value, createRevision: row.create_rev, modRevision: row.mod_rev, version: row.version };
  if (row.lease !== null) kv.lease = row.lease;
  return kv;
}

function toEvent(row: EventRow): WatchEvent {
  if (row.type === 1) return { type: "delete", key: row.key, revision: row.rev };
  const kv: KeyValue = { key: row.key, value: row.value ?? "", createRevision: row.create_rev ?? row.rev, modRevision: row.rev, version: row.version ?? 1 };
  if (row.lease !== null) kv.lease = row.lease;
  return { type: "put", key: row.key, value: kv.value, revision: row.rev, kv };
}

function leaseNotFound(id: LeaseId): StoreError {
  return new StoreError("lease-not-found", `lease ${id} not found (expired or revoked)`);
}

function closedError(): StoreError {
  return new StoreError("closed", "the store is closed");
}
