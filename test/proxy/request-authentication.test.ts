/**
 * RequestAuthentication: the schema's refusals, where a token is looked for, what the
 * authenticator decides and keeps, and requestPrincipals in AuthorizationPolicy rules.
 */
import { beforeAll, describe, expect, setSystemTime, test } from "bun:test";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import type { AuthorizationPolicy } from "../../src/config/kinds/authorization-policy.ts";
import type { RequestAuthentication } from "../../src/config/kinds/request-authentication.ts";
import { parseManifest } from "../../src/config/manifest.ts";
import "../../src/config/kinds/index.ts";
import { ANONYMOUS, requestAuthenticatorFor, Unauthenticated, type Authenticated, type AuthenticationOutcome } from "../../src/proxy/authentication/authenticator.ts";
import { AMBIGUOUS, findToken, tokenLocation, tokenOf } from "../../src/proxy/authentication/token-lookup.ts";
import { REMOTE_KEYS } from "../../src/proxy/authentication/issuer-keys.ts";
import { authorizerFor } from "../../src/proxy/authorization.ts";

const ISSUER = "https://id.example.com";
const subject = { namespace: "shop", service: "payments", trustDomain: "mesh.local", httpPort: 8080 };

function manifest<T>(kind: string, spec: Record<string, unknown>): T {
  const r = parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind, metadata: { name: "p", namespace: "shop" }, spec });
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.manifest as T;
}

function issues(spec: Record<string, unknown>): string[] {
  const r = parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind: "RequestAuthentication", metadata: { name: "p", namespace: "shop" }, spec });
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
}

describe("schema", () => {
  const rsa = { kty: "RSA", n: "sXch", e: "AQAB", kid: "a" };
  test("defaults: the Authorization header with a Bearer prefix, the token not forwarded", () => {
    const p = manifest<RequestAuthentication>("RequestAuthentication", { service: "payments", jwtRules: [{ issuer: ISSUER, jwks: { keys: [rsa] } }] });
    expect(p.spec.jwtRules[0]).toMatchObject({ fromHeaders: [{ name: "authorization", prefix: "Bearer " }], forwardOriginalToken: false });
  });

  test("private or symmetric keys, plain HTTP to another host, and keys given twice or not at all are refused, each with its place", () => {
    expect(
      issues({
        service: "payments",
        jwtRules: [
          { issuer: ISSUER, jwks: { keys: [{ ...rsa, d: "secret", p: "x" }, { kty: "oct", k: "c2VjcmV0" }, { ...rsa, use: "enc" }] } },
          { issuer: "https://b", jwksUri: "http://keys.example.com/jwks.json" },
          { issuer: "https://c", jwksUri: "https://keys.example.com/jwks.json", jwks: { keys: [rsa] } },
          { issuer: "https://d" },
          { issuer: ISSUER, jwksUri: "https://ok.example.com/keys", fromHeaders: [{ name: "x-mesh-client-id" }] },
        ],
      }),
    ).toEqual([
      "spec.jwtRules[0].jwks.keys[0]: holds private key material (d, p); give the public key only: a policy is sent to every sidecar of the service and shown in /config_dump",
      "spec.jwtRules[0].jwks.keys[1].kty: expected kty RSA, EC or OKP: only public keys of asymmetric algorithms verify tokens",
      'spec.jwtRules[0].jwks.keys[2].use: expected use "sig"',
      "spec.jwtRules[1].jwksUri: expected https://: keys fetched over plain HTTP could be swapped on the way (http:// only to a loopback address)",
      "spec.jwtRules[2].jwks: give the issuer's keys as jwks or jwksUri, one of the two",
      "spec.jwtRules[3].jwks: give the issuer's keys as jwks or jwksUri, one of the two",
      'spec.jwtRules[4].fromHeaders[0].name: "x-mesh-client-id" is removed or set by the proxy; a token cannot travel in it',
      `spec.jwtRules[4].issuer: issuer "${ISSUER}" is listed twice`,
    ]);
  });

  test("a claim header must be one of its own: not a token's header, not one the proxy sets", () => {
    expect(
      issues({ service: "payments", jwtRules: [{ issuer: ISSUER, jwks: { keys: [rsa] }, outputClaimToHeaders: [{ header: "Authorization", claim: "sub" }, { header: "x-mesh-client-id", claim: "sub" }, { header: "x-user", claim: "a..b" }] }] }),
    ).toEqual([
      'spec.jwtRules[0].outputClaimToHeaders[1].header: "x-mesh-client-id" is removed or set by the proxy; it cannot carry a claim',
      'spec.jwtRules[0].outputClaimToHeaders[2].claim: expected a claim name, or names joined by "." for a nested claim',
      'spec.jwtRules[0].outputClaimToHeaders[0].header: "authorization" carries tokens (fromHeaders); a claim needs a header of its own',
    ]);
  });

  test("http:// is accepted to a loopback key server", () => {
    for (const uri of ["http://127.0.0.1:8080/keys", "http://localhost/keys", "http://[::1]:9000/keys"]) expect(issues({ service: "*", jwtRules: [{ issuer: ISSUER, jwksUri: uri }] })).toEqual([]);
  });

  test("a requestPrincipals pattern has '*' only at an end", () => {
    const r = parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind: "AuthorizationPolicy", metadata: { name: "p", namespace: "shop" }, spec: { service: "payments", rules: [{ from: { requestPrincipals: ["a*b", "*", "https://x/*"] } }] } });
    expect(r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`)).toEqual(['spec.rules[0].from.requestPrincipals[0]: "*" may stand only at the start or the end']);
  });
});

describe("where a token is looked for", () => {
  const bearer = [tokenLocation("authorization", "Bearer ")];
  const jws = "aGVhZA.Ym9keQ.c2ln";
  const tokenIn = (fields: string[], locations = bearer) => {
    const found = findToken(fields, [], locations);
    return found === undefined || found === AMBIGUOUS ? found : { token: tokenOf(found), header: found.header };
  };
  test("the scheme in any case, ended by spaces or tabs; a value without it is no token", () => {
    expect(tokenIn(["authorization", `BEARER   ${jws}`])).toEqual({ token: jws, header: "authorization" });
    expect(tokenIn(["authorization", `Bearer\t${jws}`])).toEqual({ token: jws, header: "authorization" });
    expect(tokenIn(["authorization", `Bearer${jws}`])).toBeUndefined();
    expect(tokenIn(["authorization", "Basic YWxpY2U6c2VjcmV0"])).toBeUndefined();
    expect(tokenIn(["authorization", "Bearer not a jwt"])).toEqual({ token: "", header: "authorization" });
  });

  test("a header listed in Connection is dropped before the service, so not looked in", () => {
    expect(findToken(["authorization", `Bearer ${jws}`], ["authorization"], bearer)).toBeUndefined();
  });

  test("x_token counts as x-token; two tokens are ambiguous", () => {
    const locations = [tokenLocation("x-token", "")];
    expect(tokenIn(["x_token", jws], locations)).toEqual({ token: jws, header: "x_token" });
    expect(findToken(["x-token", jws, "x_token", jws], [], locations)).toBe(AMBIGUOUS);
    expect(findToken(["authorization", `Bearer ${jws}`, "authorization", `Bearer ${jws}`], [], bearer)).toBe(AMBIGUOUS);
  });
});

describe("the authenticator", () => {
  let keys: Awaited<ReturnType<typeof generateKeyPair>>;
  let policy: RequestAuthentication;
  const sign = (claims: Record<string, unknown> = {}, sub = "alice") =>
    new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(ISSUER).setSubject(sub).setAudience("payments").setExpirationTime("5m").sign(keys.privateKey);

  beforeAll(async () => {
    keys = await generateKeyPair("ES256");
    policy = manifest("RequestAuthentication", { service: "payments", jwtRules: [{ issuer: ISSUER, audiences: ["payments"], jwks: { keys: [{ ...(await exportJWK(keys.publicKey)), kid: "k1" }] } }] });
  });

  test("only the service's own, or the namespace's '*', apply", () => {
    expect(requestAuthenticatorFor([policy], { ...subject, service: "orders" })).toBeUndefined();
    expect(requestAuthenticatorFor([policy], { ...subject, namespace: "other" })).toBeUndefined();
    expect(requestAuthenticatorFor([policy], subject)).toBeDefined();
  });

  test("no token: anonymous at once; a new token: verified asynchronously, then kept, so the next request is decided at once", async () => {
    const a = requestAuthenticatorFor([policy], subject)!;
    expect(a.authenticate(["host", "payments"], [])).toBe(ANONYMOUS);
    const fields = ["authorization", `Bearer ${await sign()}`];
    const first = a.authenticate(fields, []);
    expect(first).toBeInstanceOf(Promise);
    expect(((await first) as Authenticated).user?.principal).toBe(`${ISSUER}/alice`);
    const again = a.authenticate(fields, []) as AuthenticationOutcome;
    expect(again).not.toBeInstanceOf(Promise);
    expect(again).toMatchObject({ user: { principal: `${ISSUER}/alice` }, strip: { names: ["authorization"] } });
  });

  test("concurrent requests with one new token both wait for its verification; a refusal is not kept", async () => {
    const a = requestAuthenticatorFor([policy], subject)!;
    const fields = ["authorization", `Bearer ${await sign({}, "bob")}`];
    const [x, y] = [a.authenticate(fields, []), a.authenticate(fields, [])];
    expect(x).toBeInstanceOf(Promise);
    expect(y).toBeInstanceOf(Promise);
    expect(await x).toEqual((await y) as Authenticated);
    const bad = ["authorization", `Bearer ${(await sign({}, "eve")).slice(0, -4)}AAAA`];
    expect(await a.authenticate(bad, [])).toMatchObject({ reason: "signature" });
    expect(a.authenticate(bad, [])).toBeInstanceOf(Promise);
  });

  test("keys from a jwksUri: through an outage of the key server, the keys held go on serving; a withdrawn key stops counting once they are due", async () => {
    let served = { keys: [{ ...(await exportJWK(keys.publicKey)), kid: "k1" }] };
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => Response.json(served) });
    const uri = `http://127.0.0.1:${server.port}/keys`;
    const remote = manifest<RequestAuthentication>("RequestAuthentication", { service: "payments", jwtRules: [{ issuer: ISSUER, jwksUri: uri }] });
    const now = Date.now();
    try {
      const failures: [string, boolean][] = [];
      const a = requestAuthenticatorFor([remote], subject, undefined, (failedUri, _reason, stale) => failures.push([failedUri, stale]))!;
      const verify = async (sub: string) => (await a.authenticate(["authorization", `Bearer ${await sign({}, sub)}`], [])) as AuthenticationOutcome;
      expect(await verify("u1")).toMatchObject({ user: { principal: `${ISSUER}/u1` } });
      // Withdrawn, and the keys due: fetched again before the next token, which no longer verifies.
      served = { keys: [] };
      setSystemTime(new Date(now + REMOTE_KEYS.maxAgeMs + 1_000));
      expect(await verify("u2")).toMatchObject({ reason: "key" });
      // Back, then the key server gone once the keys are due again: the keys held still serve.
      served = { keys: [{ ...(await exportJWK(keys.publicKey)), kid: "k1" }] };
      setSystemTime(new Date(now + 2 * REMOTE_KEYS.maxAgeMs + 2_000));
      expect(await verify("u3")).toMatchObject({ user: { principal: `${ISSUER}/u3` } });
      server.stop(true);
      setSystemTime(new Date(now + 3 * REMOTE_KEYS.maxAgeMs + 3_000));
      expect(await verify("u4")).toMatchObject({ user: { principal: `${ISSUER}/u4` } });
      expect(await verify("u5")).toMatchObject({ user: { principal: `${ISSUER}/u5` } });
      expect(failures).toEqual([[uri, true]]); // told once: the next fetch waits out the cool-down
    } finally {
      setSystemTime();
      server.stop(true);
    }
  });

  test("one value in two headers of different prefixes is two readings: the token found after one prefix is not reused for the other", async () => {
    const jwk = { ...(await exportJWK(keys.publicKey)), kid: "k1" };
    const two = manifest<RequestAuthentication>("RequestAuthentication", {
      service: "payments",
      jwtRules: [
        { issuer: ISSUER, jwks: { keys: [jwk] } },
        { issuer: "https://other.example.com", jwks: { keys: [jwk] }, fromHeaders: [{ name: "x-token" }] },
      ],
    });
    const a = requestAuthenticatorFor([two], subject)!;
    const value = `Bearer ${await sign()}`;
    expect(await a.authenticate(["authorization", value], [])).toMatchObject({ user: { principal: `${ISSUER}/alice` } });
    expect(await a.authenticate(["x-token", value], [])).toMatchObject({ reason: "malformed" });
  });

  test("a key server unreachable before any keys came: tokens are refused, and fetches are tried once per cool-down, not per request", async () => {
    const closed = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const uri = `http://127.0.0.1:${closed.port}/keys`;
    closed.stop(true);
    const failures: boolean[] = [];
    const remote = manifest<RequestAuthentication>("RequestAuthentication", { service: "payments", jwtRules: [{ issuer: ISSUER, jwksUri: uri }] });
    const a = requestAuthenticatorFor([remote], subject, undefined, (_uri, _reason, stale) => failures.push(stale))!;
    const verify = async (sub: string) => (await a.authenticate(["authorization", `Bearer ${await sign({}, sub)}`], [])) as AuthenticationOutcome;
    expect(await verify("v1")).toMatchObject({ reason: "keys-unavailable" });
    expect(await verify("v2")).toMatchObject({ reason: "keys-unavailable" });
    expect(failures).toEqual([false]);
  });

  test("a refusal names its reason", async () => {
    const a = requestAuthenticatorFor([policy], subject)!;
    const wrongAudience = await new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(ISSUER).setAudience("ledger").setExpirationTime("5m").sign(keys.privateKey);
    const outcome = (await a.authenticate(["authorization", `Bearer ${wrongAudience}`], [])) as Unauthenticated;
    expect([outcome.reason, outcome.detail]).toEqual(["claims", "the token's aud claim is not accepted"]);
  });
});

describe("claims in an AuthorizationPolicy's conditions", () => {
  const caller = "spiffe://mesh.local/ns/shop/sa/orders";
  const ruleWith = (action: "allow" | "deny", claim: string, values: string[]) =>
    authorizerFor([manifest<AuthorizationPolicy>("AuthorizationPolicy", { service: "payments", action, rules: [{ when: [{ claim, values }] }] })], subject)!;
  const user = (claims: Record<string, unknown>) => ({ principal: `${ISSUER}/alice`, claims });
  const allowed = (claim: string, values: string[], claims?: Record<string, unknown>) => ruleWith("allow", claim, values).check(caller, "GET", "/", [], [], claims && user(claims)) === undefined;

  test("a string, a string of a list, a scope of the space-separated scope claim, a nested claim, a number or boolean as text", () => {
    expect(allowed("groups", ["admins"], { groups: ["staff", "admins"] })).toBe(true);
    expect(allowed("groups", ["admins"], { groups: ["staff"] })).toBe(false);
    expect(allowed("tier", ["gold"], { tier: "gold" })).toBe(true);
    expect(allowed("scope", ["payments:write"], { scope: "openid payments:write" })).toBe(true);
    expect(allowed("scope", ["payments"], { scope: "openid payments:write" })).toBe(false);
    expect(allowed("realm_access.roles", ["ops"], { realm_access: { roles: ["ops"] } })).toBe(true);
    expect(allowed("email_verified", ["true"], { email_verified: true })).toBe(true);
  });

  test("no token, a missing claim, an object or an inherited name match nothing", () => {
    expect(allowed("groups", ["admins"])).toBe(false);
    expect(allowed("groups", ["admins"], {})).toBe(false);
    expect(allowed("realm_access", ["ops"], { realm_access: { roles: ["ops"] } })).toBe(false);
    expect(allowed("constructor", ["function Object() { [native code] }"], {})).toBe(false);
  });

  test("a deny on a claim refuses any token holding one of its values", () => {
    const deny = ruleWith("deny", "groups", ["suspended"]);
    expect(deny.check(caller, "GET", "/", [], [], user({ groups: ["staff", "suspended"] }))).toMatchObject({ policy: "shop/p" });
    expect(deny.check(caller, "GET", "/", [], [], user({ groups: ["staff"] }))).toBeUndefined();
  });

  test("a condition names a header or a claim, one of the two, and a claim path has no empty names", () => {
    const r = parseManifest({
      apiVersion: "mesh.dev/v1alpha1",
      kind: "AuthorizationPolicy",
      metadata: { name: "p", namespace: "shop" },
      spec: { service: "payments", rules: [{ when: [{ header: "x-a", claim: "b", values: ["c"] }, { values: ["c"] }, { claim: "a..b", values: ["c"] }] }] },
    });
    expect(r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`)).toEqual([
      "spec.rules[0].when[0].header: give header or claim, one of the two",
      "spec.rules[0].when[1].header: give header or claim, one of the two",
      'spec.rules[0].when[2].claim: expected a claim name, or names joined by "." for a nested claim',
    ]);
  });
});

describe("requestPrincipals in an AuthorizationPolicy", () => {
  const allow = (patterns: string[]) => authorizerFor([manifest<AuthorizationPolicy>("AuthorizationPolicy", { service: "payments", rules: [{ from: { requestPrincipals: patterns } }] })], subject)!;
  const caller = "spiffe://mesh.local/ns/shop/sa/orders";
  test("exact, prefix and '*' match the verified principal; no token matches none", () => {
    const check = (patterns: string[], principal?: string) => allow(patterns).check(caller, "GET", "/", [], [], principal === undefined ? undefined : { principal, claims: {} }) === undefined;
    expect(check([`${ISSUER}/alice`], `${ISSUER}/alice`)).toBe(true);
    expect(check([`${ISSUER}/alice`], `${ISSUER}/alicex`)).toBe(false);
    expect(check([`${ISSUER}/*`], `${ISSUER}/bob`)).toBe(true);
    expect(check([`${ISSUER}/*`], "https://id.example.com.evil/x")).toBe(false);
    expect(check(["*"], `${ISSUER}/bob`)).toBe(true);
    expect(check(["*"])).toBe(false);
  });
});
