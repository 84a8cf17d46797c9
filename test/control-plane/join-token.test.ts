/** Join tokens refuse every forgery threats.md lists; a good one yields exactly its grant. */
import { describe, expect, test } from "bun:test";
import { calculateJwkThumbprint, exportJWK, exportSPKI, SignJWT, UnsecuredJWT } from "jose";
import { issueJoinToken, issuerOf, JOIN_AUDIENCE, verifyJoinToken, type TokenKey } from "../../src/control-plane/join-token.ts";
import { generateKeyPair } from "../../src/pki/x509.ts";

async function tokenKey(): Promise<TokenKey> {
  const k = await generateKeyPair();
  return { ...k, kid: await calculateJwkThumbprint(await exportJWK(k.publicKey)) };
}

const key = await tokenKey();
const TD = "mesh.local";
const grant = { trustDomain: TD, namespace: "shop", service: "orders" };
const SUB = "spiffe://mesh.local/ns/shop/sa/orders";

/** A token with our claims, signed however the attacker likes. */
function forged(header: Record<string, unknown>) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ ns: "shop", svc: "orders" })
    .setProtectedHeader({ alg: "ES256", kid: key.kid, ...header } as never)
    .setIssuer(issuerOf(TD))
    .setAudience(JOIN_AUDIENCE)
    .setSubject(SUB)
    .setJti("j1")
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + 600);
}

async function refusal(token: string, now?: number): Promise<string> {
  try {
    await verifyJoinToken(token, key, TD, now);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("token was accepted");
}

describe("join tokens", () => {
  test("a token verifies to its one identity, with a jti and an expiry", async () => {
    const { token: t } = await issueJoinToken(key, grant, 60_000);
    const v = await verifyJoinToken(t, key, TD);
    expect(v).toMatchObject({ namespace: "shop", service: "orders", spiffeId: SUB });
    expect(v.jti).toMatch(/^[0-9a-f-]{36}$/);
    expect(v.expiresAt - Date.now()).toBeGreaterThan(55_000);
    expect(v.expiresAt - Date.now()).toBeLessThanOrEqual(61_000);
  });

  test("alg none is refused", async () => {
    const t = new UnsecuredJWT({ ns: "shop", svc: "orders" }).setSubject(SUB).setIssuer(issuerOf(TD)).setAudience(JOIN_AUDIENCE).setJti("x").setExpirationTime("10m").encode();
    expect(await refusal(t)).toBe("signed by an unknown key");
    const withKid = `${Buffer.from(JSON.stringify({ alg: "none", kid: key.kid })).toString("base64url")}.${t.split(".")[1]}.`;
    expect(await refusal(withKid)).toBe("algorithm not accepted (ES256 only)");
  });

  test("HS256 keyed with our public key is refused", async () => {
    const secret = new TextEncoder().encode(await exportSPKI(key.publicKey));
    expect(await refusal(await forged({ alg: "HS256" }).sign(secret))).toBe("algorithm not accepted (ES256 only)");
  });

  test("an embedded jwk, a jku or an x5c header is refused, even when its signature is right", async () => {
    const attacker = await tokenKey();
    const jwk = await exportJWK(attacker.publicKey);
    expect(await refusal(await forged({ jwk }).sign(attacker.privateKey))).toBe('header "jwk" is not accepted');
    expect(await refusal(await forged({ jku: "https://evil/jwks" }).sign(attacker.privateKey))).toBe('header "jku" is not accepted');
    expect(await refusal(await forged({ x5c: ["AAAA"] }).sign(attacker.privateKey))).toBe('header "x5c" is not accepted');
  });

  test("another key, or an unknown kid, is refused", async () => {
    const attacker = await tokenKey();
    expect(await refusal(await forged({}).sign(attacker.privateKey))).toBe("signature does not verify");
    expect(await refusal(await forged({ kid: "other" }).sign(key.privateKey))).toBe("signed by an unknown key");
  });

  test("expired, not yet valid, wrong audience or issuer: refused", async () => {
    const { token: t } = await issueJoinToken(key, grant, 60_000);
    expect(await refusal(t, Date.now() + 120_000)).toBe("token has expired");
    expect(await refusal(t, Date.now() - 120_000)).toContain("claim nbf is not valid");
    expect(await refusal(await forged({}).setAudience("other").sign(key.privateKey))).toContain("claim aud is not valid");
    expect(await refusal(await forged({}).setIssuer("spiffe://other/mesh/control-plane").sign(key.privateKey))).toContain("claim iss is not valid");
    // The same token, now: still good.
    expect((await verifyJoinToken(t, key, TD)).spiffeId).toBe(SUB);
  });

  test("a subject that is not the granted service is refused", async () => {
    expect(await refusal(await forged({}).setSubject("spiffe://mesh.local/ns/shop/sa/admin").sign(key.privateKey))).toBe("subject does not match the granted service");
  });

  test("a 1 MiB token is refused before it is parsed", async () => {
    expect(await refusal("a".repeat(1 << 20))).toBe("token is 1048576 characters; at most 4096");
    expect(await refusal("garbage")).toBe("not a JWT");
  });

  test("lifetimes are bounded", async () => {
    await expect(issueJoinToken(key, grant, 0)).rejects.toThrow("token lifetime");
    await expect(issueJoinToken(key, grant, 48 * 3600_000)).rejects.toThrow("token lifetime");
  });
});
