/** The control plane's storage: one interface, an embedded and an etcd implementation. */
export type { KeyValue, LeaseGrant, LeaseId, ListResult, PutOptions, Store, WatchEvent, WatchHandlers } from "./store.ts";
export { StoreError, type StoreErrorCode } from "./errors.ts";
export { openSqliteStore, SqliteStore, type SqliteStoreOptions } from "./sqlite.ts";
export { EtcdStore, type EtcdStoreOptions } from "./etcd.ts";
