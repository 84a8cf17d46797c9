/**
 * RequestAuthentication through real sidecars: end-user tokens signed with keys made
 * here, verified by the service's inbound against an inline key set and one fetched
 * from a loopback key server; an AuthorizationPolicy that requires a principal; the
 * token's header taken off the request unless forwarded; refusals counted.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { exportJWK, generateKeyPair, SignJWT, type JWK } from "jose";
import { fixtureFor, metricValue, type EchoService } from "../helpers/mesh-fixture.ts";
import { rawExchange } from "../helpers/raw-http.ts";
import { REMOTE_KEYS } from "../../src/proxy/authentication/issuer-keys.ts";

const fx = fixtureFor("orders", "payments");
const INLINE_ISSUER = "https://id.example.com";
const REMOTE_ISSUER = "https://login.example.org";

type Keys = Awaited<ReturnType<typeof generateKeyPair>>;
let inline: Keys;
let remote: Keys;
let rotated: Keys;
/** What the loopback key server serves, changed by the rotation test. */
let served: { keys: JWK[] };
let jwksServer: ReturnType<typeof Bun.serve>;
let jwksFetches = 0;
let seen: EchoService;
let ports: { orders: number; paymentsAdmin: number };

const publicJwk = async (k: Keys, kid: string) => ({ ...(await exportJWK(k.publicKey)), kid, alg: "ES256", use: "sig" });

async function token(keys: Keys, kid: string, claims: Record<string, unknown> = {}, issuer = INLINE_ISSUER, expiresIn: string | number = "10m"): Promise<string> {
  return new SignJWT({ ...claims }).setProtectedHeader({ alg: "ES256", kid }).setIssuer(issuer).setSubject("alice").setAudience("payments").setIssuedAt().setExpirationTime(expiresIn).sign(keys.privateKey);
}

beforeAll(async () => {
  [inline, remote, rotated] = await Promise.all([generateKeyPair("ES256"), generateKeyPair("ES256"), generateKeyPair("ES256")]);
  served = { keys: [await publicJwk(remote, "r1")] };
  jwksServer = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: () => {
      jwksFetches++;
      return Response.json(served);
    },
  });
  const policies = `---
apiVersion: mesh.dev/v1alpha1
kind: RequestAuthentication
metadata:
  name: end-users
spec:
  service: payments
  jwtRules:
    - issuer: ${INLINE_ISSUER}
      audiences: [payments]
      jwks: ${JSON.stringify({ keys: [await publicJwk(inline, "k1")] })}
      outputClaimToHeaders:
        - { header: x-user, claim: sub }
        - { header: x-tier, claim: plan.tier }
    - issuer: ${REMOTE_ISSUER}
      jwksUri: http://127.0.0.1:${jwksServer.port}/keys
      fromHeaders: [{ name: x-user-token }]
      forwardOriginalToken: true
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: users-only
spec:
  service: payments
  rules:
    - from: { requestPrincipals: ["${INLINE_ISSUER}/*", "${REMOTE_ISSUER}/alice"] }
      to: { paths: [/v1/*] }
    - to: { paths: [/public] }
    - to: { paths: [/admin/*] }
      when: [{ claim: groups, values: [admins] }]
`;
  seen = fx.service((req) =>
    Response.json({
      authorization: req.headers.get("authorization"),
      userToken: req.headers.get("x-user-token"),
      path: new URL(req.url).pathname,
      claims: [...req.headers].filter(([name]) => /^x[-_](user|tier)$/.test(name)),
    }),
  );
  const payments = await fx.proxy("payments", seen.url, fx.config("payments", {}, policies));
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }));
  ports = { orders: orders.ports.outbound, paymentsAdmin: payments.ports.admin };
});

afterAll(() => jwksServer?.stop(true));

async function call(target: string, headers: Record<string, string> = {}): Promise<{ status: number; error: string | null; head: string; body: string }> {
  const lines = [`GET ${target} HTTP/1.1`, "Host: payments", "Connection: close", ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  const r = await rawExchange(`${lines.join("\r\n")}\r\n\r\n`, { port: ports.orders });
  const [head = "", body = ""] = r.text.split("\r\n\r\n");
  return { status: r.statuses[0] ?? 0, error: /x-mesh-error: ([\w-]+)/i.exec(head)?.[1] ?? null, head, body };
}

describe("tokens verified at the service's inbound", () => {
  test("a valid token lets the user in; its header does not reach the service", async () => {
    const r = await call("/v1/charges", { authorization: `Bearer ${await token(inline, "k1")}` });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ authorization: null, userToken: null, path: "/v1/charges", claims: [["x-user", "alice"]] });
    // Seen again: verified from the kept result.
    expect((await call("/v1/charges", { authorization: `Bearer ${await token(inline, "k1")}` })).status).toBe(200);
  });

  test("claims the rule names reach the service as headers; copies a client sends are removed, token or not", async () => {
    const claimsSeen = async (headers: Record<string, string>) => JSON.parse((await call("/public", headers)).body).claims;
    const gold = await token(inline, "k1", { plan: { tier: "gold" } });
    expect(await claimsSeen({ authorization: `Bearer ${gold}`, "x-user": "admin", x_tier: "platinum" })).toEqual([["x-tier", "gold"], ["x-user", "alice"]]);
    expect(await claimsSeen({ "x-user": "admin", x_user: "admin", "x-tier": "platinum" })).toEqual([]);
    // A claim that is not printable ASCII on one line (a header to inject), or not a string, number or boolean, is left out.
    const odd = await new SignJWT({ plan: { tier: ["a", "b"] } }).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(INLINE_ISSUER).setSubject("eve\r\nx-admin: 1").setAudience("payments").setExpirationTime("5m").sign(inline.privateKey);
    const r = await call("/public", { authorization: `Bearer ${odd}` });
    expect([r.status, JSON.parse(r.body).claims]).toEqual([200, []]);
  });

  test("a claim condition: only a token whose groups hold admins reaches /admin", async () => {
    expect((await call("/admin/users", { authorization: `Bearer ${await token(inline, "k1", { groups: ["staff", "admins"] })}` })).status).toBe(200);
    expect((await call("/admin/users", { authorization: `Bearer ${await token(inline, "k1", { groups: ["staff"] })}` })).status).toBe(403);
    expect((await call("/admin/users")).status).toBe(403);
  });

  test("no token: no principal, so only what needs none is allowed", async () => {
    expect((await call("/public")).status).toBe(200);
    const r = await call("/v1/charges");
    expect([r.status, r.error]).toEqual([403, "forbidden"]);
  });

  test("a token that does not verify gets 401 unauthenticated, whatever the path", async () => {
    const other = await generateKeyPair("ES256");
    const cases: [string, string][] = [
      ["signature", `Bearer ${await token(other, "k1")}`],
      ["expired", `Bearer ${await token(inline, "k1", {}, INLINE_ISSUER, Math.floor(Date.now() / 1000) - 3600)}`],
      ["claims", `Bearer ${await new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(INLINE_ISSUER).setSubject("alice").setAudience("someone-else").setExpirationTime("10m").sign(inline.privateKey)}`],
      ["issuer", `Bearer ${await token(inline, "k1", {}, "https://evil.example")}`],
      ["malformed", "Bearer not-a-jwt"],
    ];
    for (const [reason, value] of cases) {
      const r = await call("/public", { authorization: value });
      expect([reason, r.status, r.error]).toEqual([reason, 401, "unauthenticated"]);
      expect(r.head.toLowerCase()).toContain('www-authenticate: bearer error="invalid_token"');
      expect(await metricValue(ports.paymentsAdmin, "mesh_authentication_failed_total", { peer: "orders", reason })).toBeGreaterThanOrEqual(1);
    }
  });

  test("two tokens are refused: the service could read the other one", async () => {
    const t = await token(inline, "k1");
    const r = await rawExchange(`GET /public HTTP/1.1\r\nHost: payments\r\nAuthorization: Bearer ${t}\r\nAuthorization: Bearer ${t}\r\nConnection: close\r\n\r\n`, { port: ports.orders });
    expect(r.statuses[0]).toBe(401);
    expect((await call("/public", { authorization: `Bearer ${t}`, x_user_token: await token(remote, "r1", {}, REMOTE_ISSUER) })).status).toBe(401);
  });

  test("an issuer's token is accepted only in the headers its own rule names", async () => {
    const r = await call("/v1/charges", { "x-user-token": await token(inline, "k1") });
    expect([r.status, r.error]).toEqual([401, "unauthenticated"]);
    expect(r.body).toContain("the token's issuer does not send its tokens in this header");
    expect((await call("/v1/charges", { authorization: `Bearer ${await token(remote, "r1", {}, REMOTE_ISSUER)}` })).status).toBe(401);
  });

  test("a header without the prefix is no token and passes untouched", async () => {
    const r = await call("/public", { authorization: "Basic YWxpY2U6c2VjcmV0" });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).authorization).toBe("Basic YWxpY2U6c2VjcmV0");
  });

  test("keys from a jwksUri, fetched again when the issuer rotates; a forwarded token reaches the service", async () => {
    const first = await token(remote, "r1", {}, REMOTE_ISSUER);
    const r = await call("/v1/charges", { "x-user-token": first });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).userToken).toBe(first);
    const fetched = jwksFetches;
    served = { keys: [await publicJwk(rotated, "r2")] };
    const next = await token(rotated, "r2", {}, REMOTE_ISSUER);
    // Within the cool-down after a fetch, a key id not held is refused without fetching: made-up ids cannot flood the issuer.
    const early = await call("/v1/charges", { "x-user-token": next });
    expect([early.status, jwksFetches]).toEqual([401, fetched]);
    expect(await metricValue(ports.paymentsAdmin, "mesh_authentication_failed_total", { reason: "key" })).toBeGreaterThanOrEqual(1);
    await Bun.sleep(REMOTE_KEYS.cooldownMs + 200);
    expect((await call("/v1/charges", { "x-user-token": next })).status).toBe(200);
    expect(jwksFetches).toBe(fetched + 1);
  }, 15_000);

  test("/config_dump shows the rules in force", async () => {
    const dump = (await (await fetch(`http://127.0.0.1:${ports.paymentsAdmin}/config_dump`)).json()) as { authentication: { policy: string; jwtRules: { issuer: string }[] }[] };
    expect(dump.authentication.map((p) => [p.policy, p.jwtRules.map((r) => r.issuer)])).toEqual([["default/end-users", [INLINE_ISSUER, REMOTE_ISSUER]]]);
  });
});
