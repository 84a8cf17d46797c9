/**
 * Join tokens: how a new sidecar proves it may have its first certificate. A token is
 * a JWT the control plane signs (ES256, its own key, never a CA key): short-lived,
 * bound to exactly one SPIFFE ID, and single-use — its `jti` is claimed in the store
 * the first time it is redeemed, so a replay, even to another replica, gets nothing.
 *
 * Verification trusts nothing the token says about how to verify it: the algorithm
 * is fixed, the key is ours (an embedded `jwk`, `jku`, `x5c` or unknown `kid` is
 * refused), and the size is capped before any parsing.
 */
import { decodeProtectedHeader, jwtVerify, SignJWT, errors as joseErrors } from "jose";
import { formatSpiffeId, workloadId } from "../pki/spiffe.ts";

export const JOIN_AUDIENCE = "mesh-join";
export const DEFAULT_JOIN_TTL_MS = 10 * 60_000;
export const MAX_JOIN_TTL_MS = 24 * 3600_000;
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
  /** Epoch ms when the token stops being valid: how long its single-use claim must be kept. */
  expiresAt: number;
}

export class JoinTokenError extends Error {
  override readonly name = "JoinTokenError";
}

export function issuerOf(trustDomain: string): string {
  return `spiffe://${trustDomain}/mesh/control-plane`;
}

export async function issueJoinToken(key: TokenKey, grant: JoinGrant, ttlMs = DEFAULT_JOIN_TTL_MS, now = Date.now()): Promise<string> {
  if (!(ttlMs > 0) || ttlMs > MAX_JOIN_TTL_MS) throw new JoinTokenError(`token lifetime must be between 1 ms and ${MAX_JOIN_TTL_MS / 3600_000}h`);
  const spiffeId = formatSpiffeId(workloadId(grant.trustDomain, grant.namespace, grant.service));
  const iat = Math.floor(now / 1000);
  return new SignJWT({ ns: grant.namespace, svc: grant.service })
    .setProtectedHeader({ alg: "ES256", typ: "JWT", kid: key.kid })
    .setIssuer(issuerOf(grant.trustDomain))
    .setAudience(JOIN_AUDIENCE)
    .setSubject(spiffeId)
    .setJti(crypto.randomUUID())
    .setIssuedAt(iat)
    .setNotBefore(iat)
    .setExpirationTime(Math.ceil((now + ttlMs) / 1000))
    .sign(key.privateKey);
}

/** Checks signature, key, issuer, audience and times; single use is the caller's store claim. */
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
