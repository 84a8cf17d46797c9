/**
 * Opening the embedded store's database: WAL, full fsync, an exclusive lock held for the
 * process's lifetime, and the schema.
 */
import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { StoreError } from "./errors.ts";

const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('revision', 1), ('compact_revision', 0), ('lease_seq', 0);
CREATE TABLE IF NOT EXISTS kv (
  key TEXT PRIMARY KEY, value TEXT NOT NULL,
  create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, ttl_ms INTEGER NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_at);
-- History for watches that resume from a revision; type 0 = put, 1 = delete.
CREATE TABLE IF NOT EXISTS events (
  rev INTEGER NOT NULL, key TEXT NOT NULL, type INTEGER NOT NULL,
  value TEXT, create_rev INTEGER, version INTEGER, lease TEXT,
  PRIMARY KEY (rev, key)
) WITHOUT ROWID;
`;

export function openDatabase(dir: string): Database {
  mkdirSync(dir, { recursive: true, mode: 0o700 }); // join-token IDs and registrations are not for other users
  const path = join(dir, "store.db");
  const db = new Database(path, { create: true, readwrite: true, strict: true });
  try {
    // Another process must fail now, not wait: watches are in-process, so two writers would
    // each miss the other's changes. EXCLUSIVE keeps the lock taken below until close, and
    // the kernel drops it if the process dies.
    db.run("PRAGMA busy_timeout = 0");
    db.run("PRAGMA locking_mode = EXCLUSIVE");
    db.run("PRAGMA journal_mode = WAL");
    // FULL: a committed write (a used token, a manifest) survives power loss, not just a crash.
    db.run("PRAGMA synchronous = FULL");
    db.run("BEGIN IMMEDIATE");
    db.run("COMMIT");
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code === "SQLITE_BUSY")
      throw new StoreError("locked", `data directory ${dir} is in use by another process`, undefined, { cause: err });
    throw err;
  }
  const { user_version } = db.query<{ user_version: number }, []>("PRAGMA user_version").get()!;
  if (user_version > SCHEMA_VERSION) {
    db.close();
    throw new StoreError("rejected", `data directory ${dir} was written by a newer mesh (schema ${user_version} > ${SCHEMA_VERSION})`);
  }
  db.transaction(() => {
    db.run(SCHEMA);
    db.run(`PRAGMA user_version = ${SCHEMA_VERSION}`);
  })();
  return db;
}
