/**
 * etcd's JSON gateway encoding: keys and values are base64 bytes, 64-bit integers are
 * decimal strings, and fields holding their zero value (0, "", false, []) are omitted.
 */
import { bytesPrefixEnd } from "./prefix.ts";
import type { KeyValue } from "./store.ts";

export interface RawHeader {
  revision?: string;
}

export interface RawKv {
  key: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
  lease?: string;
}

export interface RawEvent {
  type?: "PUT" | "DELETE";
  kv: RawKv;
}

export const b64 = (s: string): string => Buffer.from(s, "utf8").toString("base64");
export const unb64 = (s: string | undefined): string => (s ? Buffer.from(s, "base64").toString("utf8") : "");

/** Revisions stay below 2^53 for any store that will ever exist; lease IDs do not, and stay strings. */
export const int = (s: string | undefined): number => (s ? Number(s) : 0);

export function toKeyValue(raw: RawKv): KeyValue {
  const kv: KeyValue = {
    key: unb64(raw.key),
    value: unb64(raw.value),
    createRevision: int(raw.create_revision),
    modRevision: int(raw.mod_revision),
    version: int(raw.version),
  };
  if (raw.lease && raw.lease !== "0") kv.lease = raw.lease;
  return kv;
}

/** The range request fields for every key under `prefix` ("" is every key). */
export function prefixRange(prefix: string): { key: string; range_end: string } {
  const bytes = Buffer.from(prefix, "utf8");
  // An empty key with range_end [0] is etcd's "all keys".
  return { key: prefix ? bytes.toString("base64") : b64("\0"), range_end: Buffer.from(bytesPrefixEnd(bytes)).toString("base64") };
}
