/**
 * What the store knows of each join token: issued by whom for which identity, how many
 * redemptions it allows and how many it has had. A token is good only while its record
 * exists, so deleting the record revokes it, and a token the store never saw is refused.
 * The record lives on a lease that lapses a minute after the token expires.
 *
 * Redemption is a compare-and-swap on the record (`used + 1` at the revision read), so
 * concurrent redemptions on any replicas never exceed `uses`. Each write holds a fresh
 * nonce: etcd settles a conditional write whose answer was lost by comparing values,
 * and two claimants must never write the same one.
 */
import { z } from "zod";
import { joinTokenKey, PREFIX } from "./keys.ts";
import { JoinTokenError, type VerifiedJoinToken } from "./join-token.ts";
import type { Store } from "../store/store.ts";

export const MAX_JOIN_USES = 10_000;
/** Compare-and-swap attempts before a redemption gives up under contention. */
const MAX_CLAIM_ATTEMPTS = 32;
/** The record outlives its token a little, so a redemption at the edge still finds it. */
const RECORD_GRACE_MS = 60_000;

const TokenRecord = z.object({
  spiffeId: z.string(),
  uses: z.number().int().min(1),
  used: z.number().int().min(0),
  issuedAt: z.string(),
  expiresAt: z.string(),
  lastUsedAt: z.string().optional(),
  nonce: z.string(),
});
export type TokenRecord = z.infer<typeof TokenRecord>;

export interface TokenSummary extends Omit<TokenRecord, "nonce"> {
  id: string;
}

/** The record, or undefined for any other value: a claim written before tokens had records marks a token already used. */
function parseRecord(value: string): TokenRecord | undefined {
  try {
    const parsed = TokenRecord.safeParse(JSON.parse(value));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Records a token just signed; it cannot be redeemed before this resolves. */
export async function recordJoinToken(store: Store, token: { jti: string; spiffeId: string; uses: number; expiresAt: number }, now = Date.now()): Promise<void> {
  const lease = await store.grant(token.expiresAt - now + RECORD_GRACE_MS);
  const record: TokenRecord = { spiffeId: token.spiffeId, uses: token.uses, used: 0, issuedAt: new Date(now).toISOString(), expiresAt: new Date(token.expiresAt).toISOString(), nonce: crypto.randomUUID() };
  if (!(await store.putIfAbsent(joinTokenKey(token.jti), JSON.stringify(record), { lease: lease.id }))) {
    await store.revoke(lease.id);
    throw new Error(`join token ${token.jti} is already recorded`);
  }
}

/**
 * Spends one use of a verified token, or throws JoinTokenError saying why not: revoked
 * or unknown, for another identity, or used up.
 */
export async function redeemJoinToken(store: Store, token: VerifiedJoinToken, now = Date.now()): Promise<TokenRecord> {
  const key = joinTokenKey(token.jti);
  for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt++) {
    const kv = await store.get(key);
    if (!kv) throw new JoinTokenError("token was revoked, or this control plane never issued it");
    const record = parseRecord(kv.value);
    if (record === undefined) throw new JoinTokenError("token was already used");
    if (record.spiffeId !== token.spiffeId) throw new JoinTokenError("token's record is for another identity");
    if (record.used >= record.uses) throw new JoinTokenError(record.uses === 1 ? "token was already used" : `token was used ${record.used} times, its limit`);
    const next: TokenRecord = { ...record, used: record.used + 1, lastUsedAt: new Date(now).toISOString(), nonce: crypto.randomUUID() };
    if (await store.putIfVersion(key, JSON.stringify(next), kv.modRevision, kv.lease ? { lease: kv.lease } : {})) return next;
  }
  throw new JoinTokenError("token is being redeemed by too many clients at once; try again");
}

export async function listJoinTokens(store: Store): Promise<TokenSummary[]> {
  const { kvs } = await store.list(PREFIX.joinTokens);
  return kvs.flatMap((kv) => {
    const parsed = parseRecord(kv.value);
    if (parsed === undefined) return [];
    const { nonce: _, ...record } = parsed;
    return [{ id: kv.key.slice(PREFIX.joinTokens.length), ...record }];
  });
}

/** Deletes the record: the token is refused from now on. False when there was none. */
export function revokeJoinToken(store: Store, id: string): Promise<boolean> {
  return store.delete(joinTokenKey(id));
}
