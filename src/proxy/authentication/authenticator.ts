/**
 * The RequestAuthentications of this sidecar's own service, compiled once per config: the
 * end-user token a request carries, verified (signature with the issuer's keys, `iss`,
 * `aud`, `exp`, `nbf`, 60 s of clock skew allowed) before any authorization policy reads
 * its principal, `iss/sub`. Istio's semantics: no token, no principal, and the request
 * goes on; a token that is not valid, from an issuer not listed, or one of two, is refused.
 *
 * Verification is asynchronous (WebCrypto), so its result is kept per token, and a
 * client's next requests with the same token are checked at once: until the token
 * expires, for at most five minutes, and no longer than the keys that verified it are
 * held before being fetched again, so a key the issuer withdrew stops counting by then.
 */
import type { RequestAuthentication } from "../../config/kinds/request-authentication.ts";
import { boundedMemo } from "../../core/bounded-memo.ts";
import { relaySkips, type RelaySkips } from "../headers.ts";
import { appliesTo, type EndUser, type PolicySubject } from "../authorization.ts";
import { claimAt } from "../authorization-conditions.ts";
import { isPlainHeaderValue } from "../../core/header-value.ts";
import { IssuerKeys, loadJose, type KeyFetchFailed, type KeySet, type KeySource } from "./issuer-keys.ts";
import { AMBIGUOUS, findToken, tokenLocation, tokenOf, type FoundToken, type TokenLocation } from "./token-lookup.ts";

/** Signature algorithms accepted: asymmetric only, so holding the keys a sidecar has cannot mint a token. */
const ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"];
const CLOCK_SKEW_S = 60;
/** A verified token is trusted again without checking for at most this long. */
const REVERIFY_AFTER_MS = 5 * 60_000;
/** Verified tokens kept; past it the oldest is forgotten (and verified again if it comes back). */
const CACHE_SIZE = 1024;
/** Longer tokens are verified every time rather than held. */
const CACHED_TOKEN_BYTES = 4096;

/** The metric label of a refusal. */
export type AuthenticationFailure = "malformed" | "ambiguous" | "issuer" | "expired" | "claims" | "signature" | "key" | "keys-unavailable" | "algorithm" | "invalid";

export class Unauthenticated {
  constructor(
    readonly reason: AuthenticationFailure,
    readonly detail: string,
  ) {}
}

/** Headers left off the request forwarded (with the proxy's own), by how the head is built: the verified token's, and those claims go in. */
export interface StrippedHeaders {
  names: readonly string[];
  skips: RelaySkips;
}

export interface Authenticated {
  /** Who the verified token is for; undefined when the request carried none. */
  user: EndUser | undefined;
  /** Set when headers are left off: the verified token's (unless forwarded), those claims go in. */
  strip: StrippedHeaders | undefined;
  /** The claims the service receives as headers (outputClaimToHeaders): as [name, value] pairs, and as head lines. */
  claimHeaders: readonly (readonly [string, string])[];
  claimLines: string;
}

export const ANONYMOUS: Authenticated = { user: undefined, strip: undefined, claimHeaders: [], claimLines: "" };

export type AuthenticationOutcome = Authenticated | Unauthenticated;

interface Issuer {
  issuer: string;
  audiences: string[] | undefined;
  source: KeySource;
  keys?: Promise<KeySet>;
  forward: boolean;
  /** The locations its rule names: its tokens are accepted there only. */
  locations: ReadonlySet<string>;
  /** Claims sent on as headers: header name, claim path. */
  outputs: readonly { header: string; claim: readonly string[] }[];
}

const locationKey = (l: TokenLocation) => `${l.name}\n${l.scheme}\n${l.spaced}`;

interface Verified {
  user: EndUser;
  claimHeaders: readonly (readonly [string, string])[];
  claimLines: string;
  issuer: Issuer;
  /** Epoch ms after which the token is verified again (and refused if expired). */
  until: number;
}

export class RequestAuthenticator {
  private readonly locations: TokenLocation[];
  private readonly byIssuer: Map<string, Issuer>;
  private readonly keys: IssuerKeys;
  /** By token: verified, or being verified (one verification for concurrent requests). */
  private readonly verified = new Map<string, Verified | Promise<Verified | Unauthenticated>>();
  /** Every header a rule sends a claim in: removed from every request, token or not, so a client cannot send one itself. */
  private readonly claimHeaderNames: readonly string[];
  /** What a request without a token gets. */
  private readonly anonymous: Authenticated;
  private lastValue = "";
  private lastAt = 0;
  private lastToken = "";
  /** The header sets without the claim headers and a token's header, by that header's name ("" for none). */
  private readonly strippedOf = boundedMemo(64, (header: string): StrippedHeaders => {
    const names = header === "" ? this.claimHeaderNames : [...this.claimHeaderNames, header];
    return { names, skips: relaySkips(names) };
  });

  constructor(
    /** The RequestAuthentications it was built from, for /config_dump. */
    readonly sources: readonly RequestAuthentication[],
    previous?: RequestAuthenticator,
    onKeyFetchFailed?: KeyFetchFailed,
  ) {
    const rules = sources.flatMap((p) => p.spec.jwtRules);
    const locationsOf = (r: (typeof rules)[number]) => r.fromHeaders.map((l) => tokenLocation(l.name, l.prefix));
    this.byIssuer = new Map(
      rules.map((r) => [
        r.issuer,
        {
          issuer: r.issuer,
          audiences: r.audiences,
          source: r.jwks ? { jwks: r.jwks } : { jwksUri: r.jwksUri!, ca: r.jwksCaBundle },
          forward: r.forwardOriginalToken,
          locations: new Set(locationsOf(r).map(locationKey)),
          outputs: (r.outputClaimToHeaders ?? []).map((o) => ({ header: o.header, claim: o.claim.split(".") })),
        },
      ]),
    );
    const seen = new Set<string>();
    this.locations = rules
      .flatMap(locationsOf)
      .filter((l) => !seen.has(locationKey(l)) && seen.add(locationKey(l)))
      // The longest prefix first: "Bearer " must win over "" on the same header.
      .sort((a, b) => b.scheme.length - a.scheme.length);
    this.claimHeaderNames = [...new Set(rules.flatMap((r) => (r.outputClaimToHeaders ?? []).map((o) => o.header)))];
    this.anonymous = this.claimHeaderNames.length === 0 ? ANONYMOUS : { ...ANONYMOUS, strip: this.strippedOf("") };
    this.keys = new IssuerKeys(
      rules.flatMap((r) => (r.jwksUri ? [{ jwksUri: r.jwksUri, ca: r.jwksCaBundle }] : [])),
      previous?.keys,
      onKeyFetchFailed,
    );
  }

  /** The request's principal, at once when it carries no token or one seen before; else once its token is verified. */
  authenticate(fields: readonly string[], dropped: readonly string[]): AuthenticationOutcome | Promise<AuthenticationOutcome> {
    const found = findToken(fields, dropped, this.locations);
    if (found === undefined) return this.anonymous;
    if (found === AMBIGUOUS) return new Unauthenticated("ambiguous", "the request carries more than one token");
    // A keep-alive client's repeated value is the previous request's string: its token is too, hash and all.
    if (found.value !== this.lastValue || found.at !== this.lastAt) {
      this.lastValue = found.value;
      this.lastAt = found.at;
      this.lastToken = tokenOf(found);
    }
    const token = this.lastToken;
    if (token === "") return new Unauthenticated("malformed", "the token is not a JWT");
    const known = this.verified.get(token);
    if (known instanceof Promise) return known.then((v) => this.outcome(v, found));
    if (known !== undefined && Date.now() < known.until) return this.outcome(known, found);
    return this.verify(token).then((v) => this.outcome(v, found));
  }

  private outcome(v: Verified | Unauthenticated, found: FoundToken): AuthenticationOutcome {
    if (v instanceof Unauthenticated) return v;
    if (!v.issuer.locations.has(locationKey(found.location))) return new Unauthenticated("issuer", "the token's issuer does not send its tokens in this header");
    // By the location's name: the header in every spelling is left off, not only the one the token came in.
    const strip = v.issuer.forward ? this.anonymous.strip : this.strippedOf(found.location.name);
    return { user: v.user, strip, claimHeaders: v.claimHeaders, claimLines: v.claimLines };
  }

  private verify(token: string): Promise<Verified | Unauthenticated> {
    const cacheable = token.length <= CACHED_TOKEN_BYTES;
    const pending: Promise<Verified | Unauthenticated> = this.check(token).then((v) => {
      // Only over its own entry: one evicted meanwhile stays out, so the cache keeps its bound.
      if (!cacheable || this.verified.get(token) !== pending) return v;
      if (v instanceof Unauthenticated) this.verified.delete(token);
      else this.verified.set(token, v);
      return v;
    });
    if (cacheable) {
      this.verified.delete(token);
      if (this.verified.size >= CACHE_SIZE) this.verified.delete(this.verified.keys().next().value!);
      this.verified.set(token, pending);
    }
    return pending;
  }

  private async check(token: string): Promise<Verified | Unauthenticated> {
    const iss = unverifiedIssuer(token);
    if (iss === undefined) return new Unauthenticated("malformed", "the token's claims are not a JSON object with an iss");
    const issuer = this.byIssuer.get(iss);
    if (issuer === undefined) return new Unauthenticated("issuer", "the token's issuer is not accepted");
    try {
      const jose = await loadJose();
      issuer.keys ??= this.keys.keysFor(issuer.source);
      const keys = await issuer.keys;
      const { payload } = await jose.jwtVerify(token, keys.getKey, {
        issuer: issuer.issuer,
        ...(issuer.audiences ? { audience: issuer.audiences } : {}),
        algorithms: ALGORITHMS,
        clockTolerance: CLOCK_SKEW_S,
      });
      const sub = typeof payload.sub === "string" ? payload.sub : "";
      const expires = typeof payload.exp === "number" ? payload.exp * 1000 : Infinity;
      const claimHeaders = issuer.outputs.flatMap((o) => {
        const value = headerValueOf(payload, o.claim);
        return value === undefined ? [] : [[o.header, value] as const];
      });
      return {
        user: { principal: `${issuer.issuer}/${sub}`, claims: payload },
        claimHeaders,
        claimLines: claimHeaders.map(([name, value]) => `${name}: ${value}\r\n`).join(""),
        issuer,
        until: Math.min(expires, Date.now() + REVERIFY_AFTER_MS, keys.dueAt() ?? Infinity),
      };
    } catch (err) {
      return failureOf(err);
    }
  }

}

/** The authenticator of `subject`'s inbound, or undefined when no RequestAuthentication applies to it. */
export function requestAuthenticatorFor(
  policies: readonly RequestAuthentication[],
  subject: PolicySubject,
  previous?: RequestAuthenticator,
  onKeyFetchFailed?: KeyFetchFailed,
): RequestAuthenticator | undefined {
  const own = policies.filter((p) => appliesTo(p, subject));
  return own.length === 0 ? undefined : new RequestAuthenticator(own, previous, onKeyFetchFailed);
}

/** A claim as a header value: a string, number or boolean claim of printable ASCII only (no line breaks to inject); undefined otherwise. */
function headerValueOf(claims: Readonly<Record<string, unknown>>, path: readonly string[]): string | undefined {
  const v = claimAt(claims, path);
  const text = typeof v === "string" ? v : typeof v === "number" || typeof v === "boolean" ? String(v) : undefined;
  return text !== undefined && isPlainHeaderValue(text) ? text : undefined;
}

/** `iss` from the token's claims, read before verifying to pick the keys; never trusted on its own. */
function unverifiedIssuer(token: string): string | undefined {
  try {
    const claims: unknown = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString("utf8"));
    const iss = claims !== null && typeof claims === "object" ? (claims as { iss?: unknown }).iss : undefined;
    return typeof iss === "string" ? iss : undefined;
  } catch {
    return undefined;
  }
}

const FAILURES: Record<string, [AuthenticationFailure, string]> = {
  ERR_JWT_EXPIRED: ["expired", "the token has expired"],
  ERR_JWT_CLAIM_VALIDATION_FAILED: ["claims", "the token's claims are not accepted"],
  ERR_JWS_SIGNATURE_VERIFICATION_FAILED: ["signature", "the token's signature does not verify"],
  ERR_JWKS_NO_MATCHING_KEY: ["key", "no key of the issuer matches the token"],
  ERR_JWKS_MULTIPLE_MATCHING_KEYS: ["key", "more than one key of the issuer matches the token"],
  ERR_JWKS_TIMEOUT: ["keys-unavailable", "the issuer's keys could not be fetched in time"],
  ERR_JWKS_INVALID: ["keys-unavailable", "the issuer's key set is not valid"],
  ERR_JOSE_ALG_NOT_ALLOWED: ["algorithm", "the token's algorithm is not accepted"],
  ERR_JWS_INVALID: ["malformed", "the token is not a valid JWS"],
  ERR_JWT_INVALID: ["malformed", "the token is not a valid JWT"],
  ERR_JWK_INVALID: ["key", "the issuer's key does not fit the token"],
  ERR_JOSE_NOT_SUPPORTED: ["algorithm", "the token's algorithm or key type is not supported"],
};

function failureOf(err: unknown): Unauthenticated {
  const code = (err as { code?: unknown }).code;
  const known = typeof code === "string" ? FAILURES[code] : undefined;
  if (known) {
    const claim = (err as { claim?: unknown }).claim;
    return new Unauthenticated(known[0], known[0] === "claims" && typeof claim === "string" ? `the token's ${claim} claim is not accepted` : known[1]);
  }
  // A key fetch that failed (refused, DNS, a status other than 200) throws without a jose code.
  return new Unauthenticated("keys-unavailable", "the issuer's keys could not be fetched");
}
