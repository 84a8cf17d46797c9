/**
 * Join tokens: how a new sidecar proves it may have its first certificate. A token is
 * a JWT the control plane signs (ES256, its own key, never a CA key): bound to exactly
 * one SPIFFE ID, and good for as many redemptions as its record in the store allows
 * (join-token-records.ts): one by default, so a replay, even to another replica, gets
 * nothing. Several uses are for replicas that start from one secret (a Kubernetes
 * Deployment, an autoscaling group); such a token may live longer, and is revoked by
 * deleting its record.
 *
 * Verification trusts nothing the token says about how to verify it: the algorithm
 * is fixed, the key is ours (an embedded `jwk`, `jku`, `x5c` or unknown `kid` is
 * refused), and the size is capped before any parsing.
 */
import { decodeProtectedHeader, jwtVerify, SignJWT, errors as joseErrors } from "jose";
import { formatSpiffeId, workloadId } from "../pki/spiffe.ts";

export const JOIN_AUDIENCE = "mesh-join";
export const DEFAULT_JOIN_TTL_MS = 10 * 60_000;
/** A single-use token is handed to one workload soon after it is made. */
export const MAX_JOIN_TTL_MS = 24 * 3600_000;
/** A token for several uses sits in a secret that new replicas read: it may last as long as a certificate may. */
export const MAX_MULTI_USE_JOIN_TTL_MS = 30 * 24 * 3600_000;
const MAX_TOKEN_CHARS = 4096;
const FORBIDDEN_HEADERS = ["jwk", "jku", "x5c", "x5u", "crit"] as const;

export interface TokenKey {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** RFC 7638 thumbprint of the public key: tokens name the key they were signed with. */
  kid: string;
}

export interface JoinGrant {
  trustDomain: string;
  namespace: string;
  service: string;
}

export interface VerifiedJoinToken extends JoinGrant {
  spiffeId: string;
  jti: string;
  /** Epoch ms when the token stops being valid. */
  expiresAt: number;
}

export class JoinTokenError extends Error {
  override readonly name = "JoinTokenError";
}

export function issuerOf(trustDomain: string): string {
  return `spiffe://${trustDomain}/mesh/control-plane`;
}

export interface IssuedJoinToken {
  token: string;
  jti: string;
  spiffeId: string;
  /** Epoch ms, as the token's `exp` says (whole seconds). */
  expiresAt: number;
}

function maxJoinTtlMs(uses: number): number {
  return uses > 1 ? MAX_MULTI_USE_JOIN_TTL_MS : MAX_JOIN_TTL_MS;
}

/** Signs a token; `uses` only bounds its lifetime here (the store's record counts the uses). */
export async function issueJoinToken(key: TokenKey, grant: JoinGrant, ttlMs = DEFAULT_JOIN_TTL_MS, uses = 1, now = Date.now()): Promise<IssuedJoinToken> {
  const max = maxJoinTtlMs(uses);
  if (!(ttlMs > 0) || ttlMs > max) throw new JoinTokenError(`token lifetime must be between 1 ms and ${max / 3600_000}h${uses > 1 ? "" : ` (${MAX_MULTI_USE_JOIN_TTL_MS / 3600_000}h for a token of several uses)`}`);
  const spiffeId = formatSpiffeId(workloadId(grant.trustDomain, grant.namespace, grant.service));
  const iat = Math.floor(now / 1000);
  const exp = Math.ceil((now + ttlMs) / 1000);
  const jti = crypto.randomUUID();
  const token = await new SignJWT({ ns: grant.namespace, svc: grant.service })
    .setProtectedHeader({ alg: "ES256", typ: "JWT", kid: key.kid })
    .setIssuer(issuerOf(grant.trustDomain))
    .setAudience(JOIN_AUDIENCE)
    .setSubject(spiffeId)
    .setJti(jti)
    .setIssuedAt(iat)
    .setNotBefore(iat)
    .setExpirationTime(exp)
    .sign(key.privateKey);
  return { token, jti, spiffeId, expiresAt: exp * 1000 };
}

/** Checks signature, key, issuer, audience and times; the uses are counted by the caller's store claim. */
export async function verifyJoinToken(token: string, key: TokenKey, trustDomain: string, now = Date.now()): Promise<VerifiedJoinToken> {
  if (token.length > MAX_TOKEN_CHARS) throw new JoinTokenError(`token is ${token.length} characters; at most ${MAX_TOKEN_CHARS}`);
  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(token) as Record<string, unknown>;
  } catch {
    throw new JoinTokenError("not a JWT");
  }
  for (const h of FORBIDDEN_HEADERS) if (h in header) throw new JoinTokenError(`header "${h}" is not accepted`);
  if (header.kid !== key.kid) throw new JoinTokenError("signed by an unknown key");
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, key.publicKey, {
      algorithms: ["ES256"],
      issuer: issuerOf(trustDomain),
      audience: JOIN_AUDIENCE,
      requiredClaims: ["exp", "nbf", "jti", "sub"],
      currentDate: new Date(now),
      clockTolerance: 5,
    }));
  } catch (err) {
    throw new JoinTokenError(describeJoseError(err));
  }
  const { ns, svc, sub, jti, exp } = payload as { ns?: unknown; svc?: unknown; sub?: unknown; jti?: unknown; exp: number };
  if (typeof ns !== "string" || typeof svc !== "string" || typeof jti !== "string") throw new JoinTokenError("token lacks its grant");
  const spiffeId = formatSpiffeId(workloadId(trustDomain, ns, svc));
  if (sub !== spiffeId) throw new JoinTokenError("subject does not match the granted service");
  return { trustDomain, namespace: ns, service: svc, spiffeId, jti, expiresAt: exp * 1000 };
}

function describeJoseError(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return "token has expired";
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `claim ${err.claim} is not valid: ${err.reason}`;
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return "algorithm not accepted (ES256 only)";
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return "signature does not verify";
  return `token refused: ${(err as Error).message}`;
}
