/**
 * The public keys tokens are verified with, by jose: an inline JWKS, or one fetched from
 * the issuer's jwksUri. jose fetches a remote set again when a token names a key it does
 * not hold (a rotation), at most once per cool-down, and when its copy ages out. A remote
 * set is kept across config versions that still name its URI, so a config change does
 * not make every sidecar fetch again. jose is loaded only when a token is first verified:
 * a sidecar without RequestAuthentication never evaluates it.
 */
import type { JWTVerifyGetKey } from "jose";
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
  /** Fetched again after this long regardless. */
  maxAgeMs: 600_000,
};

export type KeySource = { jwks: z.output<typeof Jwks> } | { jwksUri: string };

/** The remote key sets of one config version, by URI; those the previous version had are taken over. */
export class IssuerKeys {
  private readonly remote = new Map<string, Promise<JWTVerifyGetKey>>();

  constructor(uris: Iterable<string>, previous?: IssuerKeys) {
    for (const uri of uris) {
      const kept = previous?.remote.get(uri);
      if (kept !== undefined) this.remote.set(uri, kept);
    }
  }

  /** The key lookup jose verifies with, made on first use; the caller keeps it for an inline set. */
  keysFor(source: KeySource): Promise<JWTVerifyGetKey> {
    if ("jwks" in source) return loadJose().then((j) => j.createLocalJWKSet(source.jwks as Parameters<Jose["createLocalJWKSet"]>[0]));
    let keys = this.remote.get(source.jwksUri);
    if (keys === undefined) {
      const url = new URL(source.jwksUri);
      keys = loadJose().then((j) => j.createRemoteJWKSet(url, { timeoutDuration: REMOTE_KEYS.timeoutMs, cooldownDuration: REMOTE_KEYS.cooldownMs, cacheMaxAge: REMOTE_KEYS.maxAgeMs }));
      this.remote.set(source.jwksUri, keys);
    }
    return keys;
  }
}
