/**
 * Review of RequestAuthentication (end-user JWTs at the inbound), as an attacker: ways a
 * request could pass a policy that requires a verified principal, a token the service
 * receives without it being verified (or after it should have been stripped), a sidecar
 * that misbehaves on tokens. Each test asserts the secure behaviour: a failure is a finding.
 *
 * Requests go straight at the payments inbound with orders' client certificate, so the
 * bytes are exactly the ones written here; the local service records every request (and
 * WebSocket upgrade) with its headers.
 */
import { afterAll, afterEach, beforeAll, describe, expect, setSystemTime, test } from "bun:test";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type JWK, type JWTHeaderParameters, type JWTPayload } from "jose";
import "../../src/config/kinds/index.ts";
import { parseManifest } from "../../src/config/manifest.ts";
import type { RequestAuthentication } from "../../src/config/kinds/request-authentication.ts";
import { RequestAuthenticator, Unauthenticated } from "../../src/proxy/authentication/authenticator.ts";
import { clientTls } from "../helpers/data-plane.ts";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { rawExchange, type RawResult } from "../helpers/raw-http.ts";

const fx = fixtureFor("orders", "payments");

const INLINE = "https://id.example.com";
const REMOTE = "https://login.example.org";
const slowIssuer = (n: number) => `https://slow${n}.example.net`;
/** How long the slow key server takes: a new slow issuer's first token holds its request this long. */
const SLOW_KEYS_MS = 700;

type Keys = Awaited<ReturnType<typeof generateKeyPair>>;
let ec: Keys; // INLINE, kid k1
let rsa: Keys; // INLINE, kid rs1
let remote: Keys; // REMOTE, kid r1
let slow: Keys; // every slow issuer, kid s1
let attacker: Keys;

interface Seen {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}
const seen: Seen[] = [];
let service: ReturnType<typeof Bun.serve<{ headers: Record<string, string> }>>;
let keyServer: ReturnType<typeof Bun.serve>;
let inbound: number;

const publicJwk = async (k: Keys, kid: string, alg: string): Promise<JWK> => ({ ...(await exportJWK(k.publicKey)), kid, alg, use: "sig" });

beforeAll(async () => {
  [ec, rsa, remote, slow, attacker] = await Promise.all([
    generateKeyPair("ES256"),
    generateKeyPair("RS256", { modulusLength: 2048 }),
    generateKeyPair("ES256"),
    generateKeyPair("ES256"),
    generateKeyPair("ES256"),
  ]);
  const remoteSet = { keys: [await publicJwk(remote, "r1", "ES256")] };
  const slowSet = { keys: [await publicJwk(slow, "s1", "ES256")] };
  keyServer = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      if (new URL(req.url).pathname.startsWith("/slow/")) {
        await Bun.sleep(SLOW_KEYS_MS);
        return Response.json(slowSet);
      }
      return Response.json(remoteSet);
    },
  });
  service = Bun.serve<{ headers: Record<string, string> }>({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req, server) {
      const headers = Object.fromEntries(req.headers as unknown as Iterable<[string, string]>);
      const path = new URL(req.url).pathname;
      if ((req.headers.get("upgrade") ?? "").toLowerCase() === "websocket") {
        seen.push({ method: "WS", path, headers, body: "" });
        if (server.upgrade(req, { data: { headers } })) return undefined;
        return new Response("not a websocket", { status: 400 });
      }
      const body = await req.text();
      seen.push({ method: req.method, path, headers, body });
      return Response.json({ path, body });
    },
    websocket: {
      open(ws) {
        ws.send(JSON.stringify({ hello: true }));
      },
      message() {},
    },
  });
  const slowRules = [1, 2, 3, 4]
    .map((n) => `    - issuer: ${slowIssuer(n)}\n      jwksUri: http://127.0.0.1:${keyServer.port}/slow/${n}\n`)
    .join("");
  const policies = `---
apiVersion: mesh.dev/v1alpha1
kind: RequestAuthentication
metadata: { name: end-users }
spec:
  service: payments
  jwtRules:
    - issuer: ${INLINE}
      audiences: [payments]
      jwks: ${JSON.stringify({ keys: [await publicJwk(ec, "k1", "ES256"), await publicJwk(rsa, "rs1", "RS256")] })}
    - issuer: ${REMOTE}
      jwksUri: http://127.0.0.1:${keyServer.port}/keys
      fromHeaders: [{ name: x-user-token }]
      forwardOriginalToken: true
${slowRules}---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: users-only }
spec:
  service: payments
  rules:
    - from: { requestPrincipals: ["${INLINE}/*", "${REMOTE}/*", "https://slow*"] }
      to: { paths: [/v1/*] }
    - to: { paths: [/public, /public/*] }
`;
  const payments = await fx.proxy("payments", `http://127.0.0.1:${service.port}`, fx.config("payments", {}, policies));
  inbound = payments.ports.inbound;
});

afterAll(() => {
  service?.stop(true);
  keyServer?.stop(true);
});

// ---- tokens ----

interface Claims {
  iss?: string;
  sub?: string;
  aud?: string;
  exp?: number | string;
  nbf?: number;
  [k: string]: unknown;
}

async function jwt(key: Keys["privateKey"] | Uint8Array, header: JWTHeaderParameters, claims: Claims = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const full = { iss: INLINE, sub: "alice", aud: "payments", exp: now + 600, ...claims };
  return new SignJWT(full as JWTPayload).setProtectedHeader(header).sign(key);
}

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
const valid = () => jwt(ec.privateKey, { alg: "ES256", kid: "k1" });
/** A well-formed token of the INLINE issuer that does not verify (signed by someone else with the issuer's kid). */
const forged = (claims: Claims = {}) => jwt(attacker.privateKey, { alg: "ES256", kid: "k1" }, { sub: "mallory", ...claims });

// ---- requests ----

interface Reply extends RawResult {
  status: number;
  reached: Seen[];
}

/** Raw bytes to the payments inbound over mTLS as orders; what came back and what reached the service. */
async function raw(bytes: string, opts: { quietMs?: number; timeoutMs?: number; thenWrite?: { afterMs: number; bytes: string } } = {}): Promise<Reply> {
  const before = seen.length;
  const r = await rawExchange(bytes, { port: inbound, tls: clientTls(fx, "orders"), quietMs: opts.quietMs ?? 300, timeoutMs: opts.timeoutMs ?? 5000, ...(opts.thenWrite ? { thenWrite: opts.thenWrite } : {}) });
  return { ...r, status: r.statuses[0] ?? 0, reached: seen.slice(before) };
}

/** One GET with these header lines (written as given), closing after it. */
const get = (path: string, lines: string[] = []) => raw(`GET ${path} HTTP/1.1\r\nHost: payments\r\n${lines.map((l) => `${l}\r\n`).join("")}Connection: close\r\n\r\n`);

/** Whether any request that reached the service carried `token` in any header. */
const carried = (r: Reply, token: string) => r.reached.some((s) => Object.values(s.headers).some((v) => v.includes(token)));

const wsUpgrade = (path: string, lines: string[] = []) =>
  `GET ${path} HTTP/1.1\r\nHost: payments\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${lines.map((l) => `${l}\r\n`).join("")}\r\n`;

// =====================================================================================

describe("signatures and algorithms", () => {
  test("HS256 signed with the issuer's RSA public key (PEM, JWK JSON, modulus) is refused", async () => {
    const pem = await exportSPKI(rsa.publicKey);
    const jwk = await exportJWK(rsa.publicKey);
    const secrets = [new TextEncoder().encode(pem), new TextEncoder().encode(JSON.stringify(jwk)), Buffer.from(jwk.n!, "base64url")];
    for (const secret of secrets) {
      for (const kid of ["rs1", "k1"]) {
        const t = await jwt(secret, { alg: "HS256", kid }, { sub: "mallory" });
        const r = await get("/v1/charges", [`Authorization: Bearer ${t}`]);
        expect([kid, r.status, r.reached.length]).toEqual([kid, 401, 0]);
      }
    }
  });

  test('alg "none" (empty signature) and an empty signature under ES256 are refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = b64({ iss: INLINE, sub: "mallory", aud: "payments", exp: now + 600 });
    for (const header of [{ alg: "none" }, { alg: "none", kid: "k1" }, { alg: "NONE", kid: "k1" }, { alg: "ES256", kid: "k1" }]) {
      const r = await get("/v1/charges", [`Authorization: Bearer ${b64(header)}.${claims}.`]);
      expect([header, r.status, r.reached.length]).toEqual([header, 401, 0]);
    }
  });

  test("a kid not in the set, no kid, an embedded jwk, a jku: each signed by the attacker, refused", async () => {
    const attackerJwk = await exportJWK(attacker.publicKey);
    const headers: JWTHeaderParameters[] = [
      { alg: "ES256", kid: "k9" },
      { alg: "ES256" },
      { alg: "ES256", jwk: attackerJwk },
      { alg: "ES256", kid: "k1", jwk: attackerJwk },
      { alg: "ES256", kid: "k1", jku: `http://127.0.0.1:${keyServer.port}/keys` },
    ];
    for (const header of headers) {
      const t = await jwt(attacker.privateKey, header, { sub: "mallory" });
      const r = await get("/v1/charges", [`Authorization: Bearer ${t}`]);
      expect([header, r.status, r.reached.length]).toEqual([header, 401, 0]);
    }
  });

  test("one listed issuer's key cannot sign for another listed issuer", async () => {
    // REMOTE's iss, signed with INLINE's key and kid; and INLINE's iss signed with REMOTE's key.
    const a = await jwt(ec.privateKey, { alg: "ES256", kid: "k1" }, { iss: REMOTE });
    const b = await jwt(remote.privateKey, { alg: "ES256", kid: "r1" });
    expect((await get("/v1/charges", [`x-user-token: ${a}`])).status).toBe(401);
    expect((await get("/v1/charges", [`Authorization: Bearer ${b}`])).status).toBe(401);
  });

  test("an RS256 token of the right key but a key-type mismatch (ES256 header on the RSA kid) is refused", async () => {
    const t = await jwt(ec.privateKey, { alg: "ES256", kid: "rs1" });
    expect((await get("/v1/charges", [`Authorization: Bearer ${t}`])).status).toBe(401);
    // ...while a proper RS256 token of the same issuer is accepted (the probe above is meaningful).
    const ok = await jwt(rsa.privateKey, { alg: "RS256", kid: "rs1" });
    expect((await get("/v1/charges", [`Authorization: Bearer ${ok}`])).status).toBe(200);
  });
});

describe("claims", () => {
  test("wrong audience, no audience, nbf in the future, expired beyond the skew, exp not a number, unlisted issuer: 401", async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases: [string, Claims][] = [
      ["aud", { aud: "someone-else" }],
      ["no aud", { aud: undefined }],
      ["nbf", { nbf: now + 3600 }],
      ["exp", { exp: now - 600 }],
      ["exp string", { exp: "9999999999" }],
      ["iss", { iss: "https://id.example.com.evil.example" }],
      ["iss slash", { iss: `${INLINE}/` }],
    ];
    for (const [name, claims] of cases) {
      const t = await jwt(ec.privateKey, { alg: "ES256", kid: "k1" }, claims);
      const r = await get("/v1/charges", [`Authorization: Bearer ${t}`]);
      expect([name, r.status, r.reached.length]).toEqual([name, 401, 0]);
    }
  });
});

describe("where the token is: header variants", () => {
  test("case, extra spaces, lower-case scheme, x_user_token, no space after the colon: verified, so a forged token is refused", async () => {
    const f = await forged();
    const fr = await jwt(attacker.privateKey, { alg: "ES256", kid: "r1" }, { iss: REMOTE });
    const cases: string[] = [
      `AUTHORIZATION: BEARER ${f}`,
      `Authorization: bearer ${f}`,
      `Authorization: Bearer    ${f}`,
      `Authorization:Bearer ${f}`,
      `Authorization: Bearer ${f}   `,
      `X-User-Token: ${fr}`,
      `x_user_token: ${fr}`,
      `X_USER_TOKEN: ${fr}`,
    ];
    for (const line of cases) {
      const r = await get("/public", [line]);
      expect([line, r.status, r.reached.length]).toEqual([line, 401, 0]);
    }
  });

  test("a value a bearer parser reads as a token is never forwarded unverified (tab after the scheme)", async () => {
    // passport-http-bearer (/(\S+)\s+(\S+)/), and any parser that splits on whitespace, read
    // "Bearer<TAB>token" as a bearer token; the proxy's prefix is "bearer " (one space).
    const f = await forged();
    for (const [name, line] of [["tab", `Authorization: Bearer\t${f}`], ["space tab", `Authorization: Bearer \t${f}`]] as const) {
      const r = await get("/public", [line]);
      expect([name, carried(r, f)]).toEqual([name, false]);
    }
  });

  test("obs-fold and a space before the colon are refused before the service", async () => {
    const f = await forged();
    for (const lines of [[`Authorization: Bearer`, ` ${f}`], [`Authorization : Bearer ${f}`], [`X-Other: 1`, ` Authorization: Bearer ${f}`]]) {
      const r = await get("/public", lines);
      expect([lines[0], r.status, r.reached.length]).toEqual([lines[0], 400, 0]);
    }
  });

  test("a token header listed in Connection is neither verified nor forwarded, and gives no principal", async () => {
    const f = await forged();
    const v = await valid();
    for (const listed of ["authorization", "Authorization", "keep-alive, AUTHORIZATION"]) {
      const open = await get("/public", [`Connection: ${listed}`, `Authorization: Bearer ${f}`]);
      expect([listed, open.status, carried(open, f)]).toEqual([listed, 200, false]);
      const guarded = await get("/v1/charges", [`Connection: ${listed}`, `Authorization: Bearer ${v}`]);
      expect([listed, guarded.status, guarded.reached.length]).toEqual([listed, 403, 0]);
    }
    const under = await get("/public", ["Connection: x_user_token", `x_user_token: ${f}`]);
    expect([under.status, carried(under, f)]).toEqual([200, false]);
  });

  test("beside a valid token, a second value the service could read instead never reaches it", async () => {
    const v = await valid();
    const f = await forged();
    const cases: string[][] = [
      [`Authorization: Bearer ${v}`, `Authorization: ${f}`],
      [`Authorization: Bearer ${v}`, `Authorization: Bearer ${f}`],
      [`Authorization: Bearer ${v}`, `x-user-token: ${f}`],
      [`Authorization: Bearer ${v}`, `x_user_token: ${f}`],
      [`Authorization: Bearer ${v}, Bearer ${f}`],
    ];
    for (const lines of cases) {
      const r = await get("/v1/charges", lines);
      expect([lines[1]?.slice(0, 20) ?? lines[0]!.slice(0, 20), carried(r, f)]).toEqual([lines[1]?.slice(0, 20) ?? lines[0]!.slice(0, 20), false]);
    }
  });

  test("a token is taken only from its own issuer's fromHeaders: REMOTE's token in INLINE's Authorization is refused", async () => {
    // REMOTE's rule reads x-user-token (and forwards it); INLINE's rule reads Authorization and
    // strips it. Istio (Envoy jwt_authn) only lets a provider extract from its own locations.
    // Accepted here, the REMOTE token is judged by REMOTE's rule (no audience check, forward:
    // true), so the Authorization header the operator configured to be stripped reaches the service.
    const t = await jwt(remote.privateKey, { alg: "ES256", kid: "r1" }, { iss: REMOTE, aud: "anything" });
    const r = await get("/v1/charges", [`Authorization: Bearer ${t}`]);
    expect(carried(r, t)).toBe(false);
    expect(r.status).toBe(401);
  });
});

describe("asynchronous verification on the raw listener", () => {
  test("pipelined requests behind a token being verified: bodies intact (length and chunked, sent late), order kept", async () => {
    const t = await jwt(slow.privateKey, { alg: "ES256", kid: "s1" }, { iss: slowIssuer(1) });
    const first = `POST /v1/charges HTTP/1.1\r\nHost: payments\r\nAuthorization: Bearer ${t}\r\nContent-Length: 7\r\n\r\nhel`;
    const rest =
      "lo-A" +
      `GET /public/b HTTP/1.1\r\nHost: payments\r\n\r\n` +
      `POST /v1/refunds HTTP/1.1\r\nHost: payments\r\nAuthorization: Bearer ${t}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n2\r\n-C\r\n0\r\n\r\n` +
      `PUT /v1/d HTTP/1.1\r\nHost: payments\r\nauthorization: bearer ${t}\r\nContent-Length: 7\r\nConnection: close\r\n\r\nhello-D`;
    const r = await raw(first, { thenWrite: { afterMs: 250, bytes: rest }, quietMs: 2000 });
    expect(r.statuses).toEqual([200, 200, 200, 200]);
    expect([...r.text.matchAll(/"path":"([^"]*)","body":"([^"]*)"/g)].map((m) => `${m[1]} ${m[2]}`)).toEqual(["/v1/charges hello-A", "/public/b ", "/v1/refunds hello-C", "/v1/d hello-D"]);
    expect(r.reached.map((s) => `${s.method} ${s.path} ${s.body}`)).toEqual(["POST /v1/charges hello-A", "GET /public/b ", "POST /v1/refunds hello-C", "PUT /v1/d hello-D"]);
    expect(carried(r, t)).toBe(false);
  });

  test("a refused token's body is discarded, never parsed as the next request (length and chunked)", async () => {
    const bad = await jwt(attacker.privateKey, { alg: "ES256", kid: "s1" }, { iss: slowIssuer(2) });
    const smuggled = `GET /v1/smuggled HTTP/1.1\r\nHost: payments\r\n\r\n`;
    const r = await raw(
      `POST /public HTTP/1.1\r\nHost: payments\r\nAuthorization: Bearer ${bad}\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}` +
        `GET /public/after HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n`,
      { quietMs: 2000 },
    );
    expect(r.statuses).toEqual([401, 200]);
    expect(r.reached.map((s) => s.path)).toEqual(["/public/after"]);
    const c = await raw(
      `POST /public HTTP/1.1\r\nHost: payments\r\nAuthorization: Bearer ${bad}\r\nTransfer-Encoding: chunked\r\n\r\n${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n` +
        `GET /v1/smuggled2 HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n`,
    );
    expect(c.statuses[0]).toBe(401);
    expect(c.reached).toEqual([]);
  });

  test("clients that leave while their token is verified: their requests are not sent to the service", async () => {
    // inbound-handler.ts: a caller that leaves cancels the service's request, "so a caller
    // cannot keep more requests running than it holds connections". Five connections send
    // the same token (one verification, shared) and close before it is verified.
    const t = await jwt(slow.privateKey, { alg: "ES256", kid: "s1" }, { iss: slowIssuer(3) });
    const before = seen.length;
    // Each closed after 150 ms; the key fetch alone takes 700.
    const sent = await Promise.all(
      Array.from({ length: 5 }, (_, i) => raw(`POST /v1/gone/${i} HTTP/1.1\r\nHost: payments\r\nAuthorization: Bearer ${t}\r\nContent-Length: 4\r\n\r\nbody`, { timeoutMs: 150 })),
    );
    expect(sent.map((r) => r.statuses.length)).toEqual([0, 0, 0, 0, 0]);
    await Bun.sleep(SLOW_KEYS_MS + 500);
    expect(seen.slice(before).map((s) => s.path)).toEqual([]);
  });
});

describe("WebSocket upgrades (loopback server path)", () => {
  test("a forged token on an upgrade is refused; no token on a guarded path is forbidden", async () => {
    const f = await forged();
    const fr = await jwt(attacker.privateKey, { alg: "ES256", kid: "r1" }, { iss: REMOTE });
    for (const lines of [[`Authorization: Bearer ${f}`], [`x_user_token: ${fr}`], [`Authorization: bearer ${f}`]]) {
      const r = await raw(wsUpgrade("/v1/ws", lines));
      expect([lines[0]!.slice(0, 20), r.status, r.reached.length]).toEqual([lines[0]!.slice(0, 20), 401, 0]);
    }
    const none = await raw(wsUpgrade("/v1/ws"));
    expect([none.status, none.reached.length]).toEqual([403, 0]);
  });

  test("forwardOriginalToken: false removes the token's header from an upgrade the service accepts", async () => {
    const v = await valid();
    const r = await raw(wsUpgrade("/v1/ws", [`Authorization: Bearer ${v}`]));
    expect(r.status).toBe(101);
    expect(r.reached.map((s) => [s.method, s.path])).toEqual([["WS", "/v1/ws"]]);
    expect(r.reached[0]!.headers.authorization).toBeUndefined();
  });

  test("an upgrade refused for its token (at the loopback server) closes its connection: nothing sent behind it reaches the service", async () => {
    const f = await forged();
    const v = await valid();
    const after = `GET /v1/after-upgrade HTTP/1.1\r\nHost: payments\r\nAuthorization: Bearer ${v}\r\nConnection: close\r\n\r\n`;
    const r = await raw(wsUpgrade("/v1/ws", [`Authorization: Bearer ${f}`]), { thenWrite: { afterMs: 100, bytes: after } });
    expect(r.statuses).toEqual([401]);
    expect(r.reached).toEqual([]);
  });
});

describe("tokens that are long or many", () => {
  test("a long valid token (not cached) is verified every time and stripped; an over-long one is refused; the sidecar lives", async () => {
    const long = await jwt(ec.privateKey, { alg: "ES256", kid: "k1" }, { pad: "x".repeat(9000) });
    expect(long.length).toBeGreaterThan(4096);
    for (let i = 0; i < 2; i++) {
      const r = await get("/v1/charges", [`Authorization: Bearer ${long}`]);
      expect([r.status, carried(r, long)]).toEqual([200, false]);
    }
    const forgedLong = await jwt(attacker.privateKey, { alg: "ES256", kid: "k1" }, { pad: "x".repeat(9000) });
    expect((await get("/v1/charges", [`Authorization: Bearer ${forgedLong}`])).status).toBe(401);
    const huge = await get("/public", [`Authorization: Bearer ${"a".repeat(20_000)}.b.c`]);
    expect([huge.status, huge.reached.length]).toEqual([431, 0]);
    // Many distinct forged tokens on one keep-alive connection, pipelined.
    const many: string[] = [];
    for (let i = 0; i < 100; i++) many.push(`GET /public HTTP/1.1\r\nHost: payments\r\nAuthorization: Bearer ${await forged({ n: i })}\r\n\r\n`);
    const flood = await raw(many.join("") + "GET /public/ok HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n", { quietMs: 1500 });
    expect(flood.statuses.length).toBe(101);
    expect(flood.statuses.slice(0, 100).every((s) => s === 401)).toBe(true);
    expect(flood.statuses[100]).toBe(200);
    expect(flood.reached.map((s) => s.path)).toEqual(["/public/ok"]);
  }, 15_000);
});

// =====================================================================================
// The authenticator itself: the cache across time and config versions (the clock moved with setSystemTime).

function authn(spec: unknown, name = "end-users"): RequestAuthentication {
  const r = parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind: "RequestAuthentication", metadata: { name, namespace: "default" }, spec });
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.manifest as RequestAuthentication;
}

async function outcome(a: RequestAuthenticator, token: string): Promise<string> {
  const o = await a.authenticate(["authorization", `Bearer ${token}`], []);
  return o instanceof Unauthenticated ? `401 ${o.reason}` : `ok ${o.user?.principal}`;
}

describe("the verified-token cache", () => {
  afterEach(() => setSystemTime());

  test("a token that expires while cached is refused once it is past exp and the skew", async () => {
    const jwks = { keys: [await publicJwk(ec, "k1", "ES256")] };
    const a = new RequestAuthenticator([authn({ service: "payments", jwtRules: [{ issuer: INLINE, jwks }] })]);
    const now = Date.now();
    const t = await jwt(ec.privateKey, { alg: "ES256", kid: "k1" }, { exp: Math.floor(now / 1000) + 30 });
    expect(await outcome(a, t)).toBe(`ok ${INLINE}/alice`);
    expect(await outcome(a, t)).toBe(`ok ${INLINE}/alice`);
    setSystemTime(new Date(now + 30_000 + 61_000 + 1000));
    expect(await outcome(a, t)).toBe("401 expired");
  });

  test("a verified token is not honoured by the next config version when its issuer or audience changed", async () => {
    const jwks = { keys: [await publicJwk(ec, "k1", "ES256")] };
    const first = new RequestAuthenticator([authn({ service: "payments", jwtRules: [{ issuer: INLINE, jwks }] })]);
    const t = await valid();
    expect(await outcome(first, t)).toBe(`ok ${INLINE}/alice`);
    const noIssuer = new RequestAuthenticator([authn({ service: "payments", jwtRules: [{ issuer: REMOTE, jwks }] })], first);
    expect(await outcome(noIssuer, t)).toBe("401 issuer");
    const otherAud = new RequestAuthenticator([authn({ service: "payments", jwtRules: [{ issuer: INLINE, jwks, audiences: ["billing"] }] })], first);
    expect(await outcome(otherAud, t)).toBe("401 claims");
    const otherKey = new RequestAuthenticator([authn({ service: "payments", jwtRules: [{ issuer: INLINE, jwks: { keys: [await publicJwk(attacker, "k1", "ES256")] } }] })], first);
    expect(await outcome(otherKey, t)).toBe("401 signature");
  });

  test("the cache stays bounded under many distinct tokens, and long tokens are not kept", async () => {
    const jwks = { keys: [await publicJwk(ec, "k1", "ES256")] };
    const a = new RequestAuthenticator([authn({ service: "payments", jwtRules: [{ issuer: INLINE, jwks }] })]);
    const cache = (a as unknown as { verified: Map<string, unknown> }).verified;
    const long = await jwt(ec.privateKey, { alg: "ES256", kid: "k1" }, { pad: "x".repeat(5000) });
    expect(await outcome(a, long)).toBe(`ok ${INLINE}/alice`);
    expect(cache.size).toBe(0);
    // Verified concurrently (as many connections would): an entry evicted while still pending
    // must not be put back when its verification ends.
    const tokens = await Promise.all(Array.from({ length: 1200 }, (_, i) => jwt(ec.privateKey, { alg: "ES256", kid: "k1" }, { sub: `u${i}` })));
    const results = await Promise.all(tokens.map((t) => outcome(a, t)));
    expect(results.every((r) => r.startsWith("ok "))).toBe(true);
    expect(cache.size).toBeLessThanOrEqual(1024);
    const forgedOnes = await Promise.all(Array.from({ length: 200 }, (_, i) => forged({ n: i })));
    expect((await Promise.all(forgedOnes.map((t) => outcome(a, t)))).every((r) => r === "401 signature")).toBe(true);
    expect(cache.size).toBeLessThanOrEqual(1024);
  });

  test("a key the issuer withdrew stops being honoured within the 5 minutes the cache promises (jwksUri)", async () => {
    // A verified token is trusted again without checking no longer than the keys that
    // verified it are held before they are fetched again (REMOTE_KEYS.maxAgeMs).
    let keys = { keys: [await publicJwk(remote, "w1", "ES256")] };
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => Response.json(keys) });
    try {
      const a = new RequestAuthenticator([authn({ service: "payments", jwtRules: [{ issuer: REMOTE, jwksUri: `http://127.0.0.1:${server.port}/keys` }] })]);
      const now = Date.now();
      const t = await jwt(remote.privateKey, { alg: "ES256", kid: "w1" }, { iss: REMOTE, exp: Math.floor(now / 1000) + 3600 });
      expect(await outcome(a, t)).toBe(`ok ${REMOTE}/alice`);
      keys = { keys: [await publicJwk(await generateKeyPair("ES256"), "w2", "ES256")] };
      setSystemTime(new Date(now + 5 * 60_000 + 30_000));
      expect(await outcome(a, t)).not.toStartWith("ok ");
    } finally {
      server.stop(true);
    }
  });
});

// =====================================================================================

describe("the schema refuses key material and key sources it must not take", () => {
  const issues = (rule: Record<string, unknown>) => {
    const r = parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind: "RequestAuthentication", metadata: { name: "p", namespace: "default" }, spec: { service: "payments", jwtRules: [{ issuer: INLINE, ...rule }] } });
    return r.ok ? [] : r.issues.map((i) => i.message);
  };

  test("private (d, p, q...) and symmetric (kty oct, k) keys are refused", async () => {
    const priv = await exportJWK((await generateKeyPair("ES256", { extractable: true })).privateKey);
    const rsaPriv = await exportJWK((await generateKeyPair("RS256", { extractable: true, modulusLength: 2048 })).privateKey);
    const bad: Record<string, unknown>[] = [
      { ...priv, kid: "k1" },
      { ...rsaPriv, kid: "rs1" },
      { kty: "oct", k: "c2VjcmV0", kid: "h1", alg: "HS256" },
      { kty: "oct", kid: "h1" },
      { ...(await exportJWK(ec.publicKey)), k: "c2VjcmV0" },
      { kty: "RSA", n: "AQAB", e: "AQAB", oth: [] },
      { kty: "oct ", k: "c2VjcmV0" },
      { kty: "ec", crv: "P-256", x: "AA", y: "AA" },
    ];
    for (const key of bad) expect([key.kty, issues({ jwks: { keys: [key] } }).length > 0]).toEqual([key.kty, true]);
    expect(issues({ jwks: { keys: [await exportJWK(ec.publicKey)] } })).toEqual([]);
  });

  test("http:// to a host that is not loopback, and other schemes, are refused", () => {
    const refused = [
      "http://keys.example.com/jwks",
      "HTTP://keys.example.com/jwks",
      "http://127.0.0.1.nip.io/jwks",
      "http://localhost.example.com/jwks",
      "http://127.0.0.1@keys.example.com/jwks",
      "http://keys.example.com\\@127.0.0.1/jwks",
      "http://keys.example.com#@127.0.0.1/jwks",
      "http://[::ffff:8.8.8.8]/jwks",
      "http://0.0.0.0/jwks",
      "http://10.0.0.1/jwks",
      "file:///etc/jwks.json",
      "ftp://127.0.0.1/jwks",
      "ws://127.0.0.1/jwks",
      "data:application/json,{}",
    ];
    for (const uri of refused) expect([uri, issues({ jwksUri: uri }).length > 0]).toEqual([uri, true]);
    for (const uri of ["https://keys.example.com/jwks", "http://127.0.0.1:8080/jwks", "http://localhost/jwks", "http://[::1]/jwks"]) expect([uri, issues({ jwksUri: uri })]).toEqual([uri, []]);
  });

  test("a token header the proxy removes or sets is refused as a location", () => {
    for (const name of ["connection", "Proxy-Authorization", "x-mesh-client-id", "host", "content-length", "transfer-encoding", "upgrade"])
      expect([name, issues({ jwks: { keys: [{ kty: "EC", crv: "P-256", x: "AA", y: "AA" }] }, fromHeaders: [{ name }] }).length > 0]).toEqual([name, true]);
  });
});
