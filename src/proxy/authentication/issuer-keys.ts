/**
 * The public keys tokens are verified with, by jose: an inline JWKS, or one fetched from
 * the issuer's jwksUri. A fetched set is fetched again when a token names a key it does
 * not hold (a rotation), at most once per cool-down, and once it is five minutes old;
 * through an outage of the key server the keys held go on serving. A remote set
 * is kept across config versions that still name its URI, so a config change does not
 * make every sidecar fetch again. jose is loaded only when a token is first verified: a
 * sidecar without RequestAuthentication never evaluates it.
 */
import type { JSONWebKeySet, JWTVerifyGetKey } from "jose";
import type { Jwks } from "../../config/kinds/request-authentication.ts";
import type { z } from "zod";

type Jose = typeof import("jose");
let jose: Promise<Jose> | undefined;
export const loadJose = (): Promise<Jose> => (jose ??= import("jose"));

/** How the sidecar fetches an issuer's keys. */
export const REMOTE_KEYS = {
  /** One fetch may take this long. */
  timeoutMs: 5_000,
  /** No fetch for this long after one: a flood of made-up key ids is not a flood of fetches, and a rotation shows within it. */
  cooldownMs: 5_000,
  /** Fetched again once this old; a token verified with them is checked again then, so a withdrawn key stops counting. */
  maxAgeMs: 300_000,
};

/** An inline set, or a URI with the CA bundle its server is verified with (default: the runtime's root store). */
export type KeySource = { jwks: z.output<typeof Jwks> } | { jwksUri: string; ca?: string };
type RemoteSource = { jwksUri: string; ca?: string };

/** One remote set per URI and trust: the same URI trusted another way is another set. */
export const remoteKeyOf = (source: RemoteSource): string => (source.ca === undefined ? source.jwksUri : `${source.jwksUri}\n${source.ca}`);

export interface KeySet {
  /** What jose verifies with. */
  getKey: JWTVerifyGetKey;
  /** Epoch ms at which these keys are due to be fetched again: a token they verified is trusted until then at most. Undefined for inline keys. */
  dueAt(): number | undefined;
}

/** Told of each fetch of a jwksUri that failed, and whether keys held go on serving. */
export type KeyFetchFailed = (uri: string, reason: string, servingHeldKeys: boolean) => void;

/** The remote key sets of one config version, by URI; those the previous version had are taken over. */
export class IssuerKeys {
  private readonly remote = new Map<string, Promise<KeySet>>();

  constructor(
    sources: Iterable<RemoteSource>,
    previous?: IssuerKeys,
    private readonly onFetchFailed: KeyFetchFailed = () => undefined,
  ) {
    for (const source of sources) {
      const key = remoteKeyOf(source);
      const kept = previous?.remote.get(key);
      if (kept !== undefined) this.remote.set(key, kept);
    }
  }

  /** The key set for a rule's source, made on first use; the caller keeps it for an inline set. */
  keysFor(source: KeySource): Promise<KeySet> {
    if ("jwks" in source) return loadJose().then((j) => ({ getKey: j.createLocalJWKSet(source.jwks as JSONWebKeySet), dueAt: () => undefined }));
    const key = remoteKeyOf(source);
    let keys = this.remote.get(key);
    if (keys === undefined) {
      const url = new URL(source.jwksUri);
      keys = loadJose().then((j) => refreshedKeys(j, url, source.ca, (reason, serving) => this.onFetchFailed(source.jwksUri, reason, serving)));
      this.remote.set(key, keys);
    }
    return keys;
  }
}

/**
 * A fetched key set. Once due, it is fetched again before the next token is verified, so
 * a key the issuer withdrew stops counting then. If that fetch fails, the keys held go on
 * serving and fetches are retried in the background, one per cool-down: an outage of the
 * key server does not refuse every user, nor make each request wait out a timeout.
 */
function refreshedKeys(j: Jose, url: URL, ca: string | undefined, onFailed: (reason: string, servingHeldKeys: boolean) => void): KeySet {
  // jose writes each set it fetches, and when, into this object.
  const fetched: { uat?: number; jwks?: JSONWebKeySet } = {};
  const remote = j.createRemoteJWKSet(url, {
    timeoutDuration: REMOTE_KEYS.timeoutMs,
    cooldownDuration: REMOTE_KEYS.cooldownMs,
    cacheMaxAge: REMOTE_KEYS.maxAgeMs,
    [j.jwksCache]: fetched as Record<string, never>,
    // A private CA's bundle: the key server is verified with it, not with the runtime's roots.
    ...(ca !== undefined && { [j.customFetch]: (input: string, init: RequestInit) => fetch(input, { ...init, tls: { ca } }) }),
  });
  let failedAt = -Infinity;
  const failed = (err: unknown) => {
    failedAt = Date.now();
    onFailed((err as Error).message, true);
  };
  let held: { uat: number; getKey: JWTVerifyGetKey } | undefined;
  const getKey: JWTVerifyGetKey = async (header, token) => {
    if (fetched.jwks === undefined || fetched.uat === undefined) {
      // No keys yet: a failed fetch refuses the token, and the next is tried a cool-down later, not per request.
      if (Date.now() - failedAt < REMOTE_KEYS.cooldownMs) throw new Error("the last fetch of the issuer's keys failed");
      return remote(header, token).catch((err: unknown) => {
        if (fetched.uat === undefined) {
          // No set came: the fetch failed, not the lookup.
          failedAt = Date.now();
          onFailed((err as Error).message, false);
        }
        throw err;
      });
    }
    if (remote.fresh) return remote(header, token);
    if (failedAt < fetched.uat) {
      try {
        await remote.reload();
        return await remote(header, token);
      } catch (err) {
        if (!remote.fresh) failed(err); // the fetch failed, not the lookup
        else throw err;
      }
    } else if (!remote.reloading && Date.now() - failedAt >= REMOTE_KEYS.cooldownMs) remote.reload().catch(failed);
    if (held?.uat !== fetched.uat) held = { uat: fetched.uat, getKey: j.createLocalJWKSet(fetched.jwks) };
    return held.getKey(header, token);
  };
  return { getKey, dueAt: () => (fetched.uat === undefined ? undefined : fetched.uat + REMOTE_KEYS.maxAgeMs) };
}
