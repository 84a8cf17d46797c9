/**
 * Review, as an attacker, of claim headers (RequestAuthentication outputClaimToHeaders) and
 * of "_" read as "-" in header names (core/cgi-name.ts): ways to make the local service
 * receive an identity or claim header the proxy did not set, to inject a header through a
 * claim value, or to make an authorization rule read a header differently from the service.
 * Each test asserts the secure behaviour: a failure is a finding.
 *
 * Requests go straight at the payments inbound with orders' client certificate, on the raw
 * listener (a GET whose head may be relayed as received; POSTs with a length or chunked, so
 * rebuilt) and as an accepted WebSocket upgrade (tunnelled to the loopback Bun.serve). A
 * refused upgrade closes its connection, so no plain request takes the loopback path. The service is a raw TCP server
 * that records every head as the bytes it got, so repeated lines and both spellings show.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload } from "jose";
import "../../src/config/kinds/index.ts";
import { parseManifest } from "../../src/config/manifest.ts";
import { clientTls } from "../helpers/data-plane.ts";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { rawExchange, type ClientTls } from "../helpers/raw-http.ts";

const fx = fixtureFor("orders", "payments");

const ORDERS = "spiffe://mesh.local/ns/default/sa/orders";
const ADMIN = "spiffe://mesh.local/ns/default/sa/admin";
const INLINE = "https://id.example.com";
const FWD = "https://fwd.example.com";
const JWTH = "https://jwt.example.com";
const UND = "https://und.example.com";

type Keys = Awaited<ReturnType<typeof generateKeyPair>>;
let idp: Keys;
let attacker: Keys;
let tls: ClientTls;

// ---- the service: raw bytes in, "ok" out ----

interface Got {
  method: string;
  path: string;
  head: string;
  /** [name as sent, value] per line. */
  fields: [string, string][];
  body: string;
  trailers: string;
}
const got: Got[] = [];
let service: TCPSocketListener<{ buf: Buffer }>;

/** One complete request at the start of `buf` (length or chunked body, trailers kept), or undefined. */
function take(buf: Buffer): { g: Got; used: number } | undefined {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const head = buf.toString("latin1", 0, end + 4);
  const lines = head.split("\r\n").slice(0, -2);
  const [method = "", target = ""] = lines[0]!.split(" ");
  const fields = lines.slice(1).map((l): [string, string] => {
    const i = l.indexOf(":");
    return [l.slice(0, i), l.slice(i + 1).trim()];
  });
  let at = end + 4;
  let body = "";
  let trailers = "";
  const cl = fields.find(([n]) => n.toLowerCase() === "content-length");
  if (cl) {
    const n = Number(cl[1]);
    if (buf.length < at + n) return undefined;
    body = buf.toString("latin1", at, at + n);
    at += n;
  } else if (fields.some(([n, v]) => n.toLowerCase() === "transfer-encoding" && /chunked/i.test(v))) {
    for (;;) {
      const lf = buf.indexOf("\r\n", at);
      if (lf < 0) return undefined;
      const size = parseInt(buf.toString("latin1", at, lf), 16);
      if (size === 0) {
        const t = buf.indexOf("\r\n\r\n", lf);
        if (t < 0) return undefined;
        trailers = buf.toString("latin1", lf + 2, t + 2);
        at = t + 4;
        break;
      }
      if (buf.length < lf + 2 + size + 2) return undefined;
      body += buf.toString("latin1", lf + 2, lf + 2 + size);
      at = lf + 2 + size + 2;
    }
  }
  return { g: { method, path: target.split("?")[0]!, head, fields, body, trailers }, used: at };
}

const cgi = (name: string) => name.toLowerCase().replaceAll("_", "-");
/** Every value the service got under `name` in any spelling, one entry per line. */
const named = (g: Got | undefined, name: string) => (g?.fields ?? []).filter(([n]) => cgi(n) === name).map(([, v]) => v);
/** Comma-separated elements over every line of `name` (any spelling). */
const elements = (g: Got | undefined, name: string) => named(g, name).flatMap((v) => v.split(",").map((e) => e.trim()).filter((e) => e !== ""));

// ---- tokens ----

const publicJwk = async (k: Keys, kid: string): Promise<JWK> => ({ ...(await exportJWK(k.publicKey)), kid, alg: "ES256", use: "sig" });

async function token(claims: Record<string, unknown> = {}, iss = INLINE, key: Keys = idp): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss, sub: "alice", aud: "payments", exp: now + 600, ...claims } as JWTPayload).setProtectedHeader({ alg: "ES256", kid: "k1" }).sign(key.privateKey);
}

// ---- requests ----

type Mode = "raw-get" | "raw-post" | "raw-chunked" | "ws";
const HTTP_MODES: Mode[] = ["raw-get", "raw-post", "raw-chunked"];
const ALL_MODES: Mode[] = [...HTTP_MODES, "ws"];
const END = "GET /end HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n";
const wsUpgrade = (path: string, lines: string[] = []) =>
  `GET ${path} HTTP/1.1\r\nHost: payments\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${lines.map((l) => `${l}\r\n`).join("")}\r\n`;

interface Sent {
  mode: Mode;
  status: number;
  statuses: number[];
  /** What the service received for this request, if anything. */
  got: Got | undefined;
}

let seq = 0;
/**
 * One request with these header lines (written as given) to `port`, as `mode` sends it.
 * The raw modes send no Connection header on the probe (so a GET may be relayed as
 * received) and a closing GET /end behind it.
 */
async function send(port: number, mode: Mode, lines: string[], prefix = "/p"): Promise<Sent> {
  const path = `${prefix}/${mode}-${++seq}`;
  const head = (m: string) => `${m} ${path} HTTP/1.1\r\nHost: payments\r\n${lines.map((l) => `${l}\r\n`).join("")}`;
  const req =
    mode === "raw-get"
      ? `${head("GET")}\r\n`
      : mode === "raw-chunked"
        ? `${head("POST")}Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`
        : `${head("POST")}Content-Length: 2\r\n\r\nok`;
  const opts = { port, tls, quietMs: 300, timeoutMs: 4000 };
  const r = mode === "ws" ? await rawExchange(wsUpgrade(path, lines), opts) : await rawExchange(req + END, opts);
  return { mode, status: r.statuses[0] ?? 0, statuses: r.statuses, got: got.find((g) => g.path === path) };
}

const sendAll = (port: number, modes: Mode[], lines: string[], prefix?: string) => Promise.all(modes.map((m) => send(port, m, lines, prefix)));

// ---- the sidecars ----

let inbound: number;
/** A sidecar whose RequestAuthentication names headers with "_"; undefined with the reason when its config was refused. */
let underscored: { port?: number; refused?: string } = {};
/** A sidecar whose claim headers are identity headers spelled with "_". */
let identityClaims: { port?: number; refused?: string } = {};

const doc = (kind: string, name: string, spec: string) => `---\napiVersion: mesh.dev/v1alpha1\nkind: ${kind}\nmetadata: { name: ${name} }\nspec:\n  service: payments\n${spec}`;
const REFUSE_WS = doc("AuthorizationPolicy", "refuse-ws", "  action: deny\n  rules:\n    - to: { paths: [/refused-ws] }\n");

async function startSide(config: string): Promise<{ port?: number; refused?: string }> {
  try {
    const p = await fx.proxy("payments", `http://127.0.0.1:${service.port}`, config, [], { timeoutMs: 8000 });
    return { port: p.ports.inbound };
  } catch (err) {
    return { refused: (err as Error).message };
  }
}

beforeAll(async () => {
  [idp, attacker] = await Promise.all([generateKeyPair("ES256"), generateKeyPair("ES256")]);
  tls = clientTls(fx, "orders");
  service = Bun.listen<{ buf: Buffer }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { buf: Buffer.alloc(0) };
      },
      data(s, chunk) {
        s.data.buf = Buffer.concat([s.data.buf, chunk]);
        for (;;) {
          const r = take(s.data.buf);
          if (!r) return;
          s.data.buf = s.data.buf.subarray(r.used);
          got.push(r.g);
          if (r.g.fields.some(([n, v]) => n.toLowerCase() === "upgrade" && /websocket/i.test(v))) {
            s.write("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            s.end();
            return;
          }
          s.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
      },
      error() {},
    },
  });
  const jwks = JSON.stringify({ keys: [await publicJwk(idp, "k1")] });
  const main =
    doc(
      "RequestAuthentication",
      "end-users",
      `  jwtRules:
    - issuer: ${INLINE}
      audiences: [payments]
      jwks: ${jwks}
      outputClaimToHeaders:
        - { header: x-user, claim: sub }
        - { header: x-tier, claim: plan.tier }
        - { header: x-n, claim: n }
    - issuer: ${FWD}
      jwks: ${jwks}
      fromHeaders: [{ name: x-fwd-token }]
      forwardOriginalToken: true
      outputClaimToHeaders:
        - { header: x-user, claim: sub }
    - issuer: ${JWTH}
      jwks: ${jwks}
      fromHeaders: [{ name: x-jwt, prefix: "Bearer " }]
`,
    ) +
    doc(
      "AuthorizationPolicy",
      "deny-some",
      `  action: deny
  rules:
    - to: { paths: [/refused-ws] }
    - when: [{ header: x-tenant, values: [evil] }]
    - when: [{ header: x-user, values: [banned] }]
`,
    ) +
    doc(
      "AuthorizationPolicy",
      "allow-some",
      `  rules:
    - to: { paths: [/p/*, /end, /refused-ws] }
    - to: { paths: [/t1/*] }
      when: [{ header: x-tenant, values: [t1] }]
    - to: { paths: [/u/*] }
      when: [{ header: x-user, values: [alice] }]
`,
    );
  const und =
    doc(
      "RequestAuthentication",
      "underscored",
      `  jwtRules:
    - issuer: ${UND}
      jwks: ${jwks}
      fromHeaders: [{ name: x_und_token, prefix: "Bearer " }]
      outputClaimToHeaders:
        - { header: x_und_user, claim: sub }
`,
    ) + REFUSE_WS;
  const ident =
    doc(
      "RequestAuthentication",
      "identity-claims",
      `  jwtRules:
    - issuer: ${INLINE}
      jwks: ${jwks}
      outputClaimToHeaders:
        - { header: x_mesh_client_id, claim: sub }
        - { header: l5d_client_id, claim: sub }
`,
    ) + REFUSE_WS;
  const [m, u, i] = await Promise.all([
    fx.proxy("payments", `http://127.0.0.1:${service.port}`, fx.config("payments-main", {}, main)),
    startSide(fx.config("payments-und", {}, und)),
    startSide(fx.config("payments-ident", {}, ident)),
  ]);
  inbound = m.ports.inbound;
  underscored = u;
  identityClaims = i;
});

afterAll(() => service?.stop(true));

// =====================================================================================

describe("the probes reach the paths they mean to", () => {
  test("a plain GET is relayed as received (case kept); every mode reaches the service", async () => {
    const rs = await sendAll(inbound, ALL_MODES, ["X-Probe: Mixed-Case"]);
    for (const r of rs) expect([r.mode, r.got !== undefined, named(r.got, "x-mesh-client-id")]).toEqual([r.mode, true, [ORDERS]]);
    const rawGet = rs.find((r) => r.mode === "raw-get")!;
    expect(rawGet.got!.head).toContain("X-Probe: Mixed-Case\r\n");
    expect(rawGet.status).toBe(200);
  });

  test("an upgrade refused at the loopback server closes its connection: a request sent behind it never reaches the service", async () => {
    const path = `/p/after-refused-${++seq}`;
    const behind = `GET ${path} HTTP/1.1\r\nHost: payments\r\nx_mesh_client_id: ${ADMIN}\r\nConnection: close\r\n\r\n`;
    const r = await rawExchange(wsUpgrade("/refused-ws"), { port: inbound, tls, quietMs: 300, timeoutMs: 4000, thenWrite: { afterMs: 100, bytes: behind } });
    expect(r.statuses).toEqual([403]);
    expect(r.text).toMatch(/connection: close/i);
    expect(got.find((g) => g.path === path)).toBeUndefined();
  });
});

describe("identity headers the proxy sets", () => {
  const forgedLines = [
    `X-Mesh-Client-Id: ${ADMIN}`,
    `x_mesh_client_id: ${ADMIN}`,
    `x-mesh_client-id: ${ADMIN}`,
    `X_MESH_CLIENT-ID: ${ADMIN}`,
    `x-mesh-client_id: ${ADMIN}`,
    `x-mesh-client-id: ${ADMIN}`,
    `L5D-Client-Id: ${ADMIN}`,
    `l5d_client-id: ${ADMIN}`,
    `L5D_CLIENT_ID: ${ADMIN}`,
    `X-Forwarded-Client-Cert: By=${ADMIN}`,
    `x_forwarded_client_cert: By=${ADMIN}`,
    `x-forwarded-client_cert: By=${ADMIN}`,
  ];

  test("forged copies in any spelling, repeated, never reach the service; the proxy's own arrives once (raw, upgrade)", async () => {
    for (const r of await sendAll(inbound, ALL_MODES, forgedLines)) {
      expect([r.mode, r.got !== undefined]).toEqual([r.mode, true]);
      expect([r.mode, named(r.got, "x-mesh-client-id"), named(r.got, "l5d-client-id"), named(r.got, "x-forwarded-client-cert")]).toEqual([r.mode, [ORDERS], [], []]);
    }
  });

  test("identity names listed in Connection do not remove the proxy's own, nor its claim headers", async () => {
    const t = await token();
    const lines = ["Connection: x-mesh-client-id, x_mesh_client_id, X-User, x_tier", `x_mesh_client_id: ${ADMIN}`, "x-user: admin", `Authorization: Bearer ${t}`];
    for (const r of await sendAll(inbound, ALL_MODES, lines)) {
      expect([r.mode, named(r.got, "x-mesh-client-id"), named(r.got, "x-user")]).toEqual([r.mode, [ORDERS], ["alice"]]);
    }
  });

  test("obs-fold, whitespace before the colon: refused before the service (raw)", async () => {
    const cases = [["X-Other: 1", ` x-mesh-client-id: ${ADMIN}`], [`x-mesh-client-id : ${ADMIN}`], [`x_mesh_client_id\t: ${ADMIN}`], ["X-Other: 1", `\tx-user: admin`]];
    for (const lines of cases) {
      for (const r of await sendAll(inbound, ["raw-get", "raw-post"], lines)) expect([lines[0], r.mode, r.status, r.got]).toEqual([lines[0], r.mode, 400, undefined]);
    }
  });

  test("names with other separators that older CGI gateways also map to '_' (Apache 2.2 http2env: any non-alphanumeric) are removed too", async () => {
    // Informational: the "_" reading is the documented model; a gateway that maps every
    // non-alphanumeric byte would read these as HTTP_X_MESH_CLIENT_ID as well.
    const lines = [`x.mesh.client.id: ${ADMIN}`, `x~mesh~client~id: ${ADMIN}`, `x-mesh.client_id: ${ADMIN}`];
    const alnum = (n: string) => n.toLowerCase().replace(/[^a-z0-9]/g, "-");
    const rs = await sendAll(inbound, ["raw-get", "raw-post"], lines);
    expect(rs.map((r) => [r.mode, (r.got?.fields ?? []).filter(([n]) => alnum(n) === "x-mesh-client-id").map(([, v]) => v)])).toEqual([
      ["raw-get", [ORDERS]],
      ["raw-post", [ORDERS]],
    ]);
  });

  test("a chunked body's trailers carry no identity or claim header to the service", async () => {
    const path = `/p/trailer-${++seq}`;
    const req = `POST ${path} HTTP/1.1\r\nHost: payments\r\nTrailer: x-mesh-client-id\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-mesh-client-id: ${ADMIN}\r\nx_user: admin\r\n\r\n`;
    const r = await rawExchange(req + END, { port: inbound, tls, quietMs: 300 });
    const g = got.find((x) => x.path === path);
    expect([r.statuses[0], g?.trailers.includes(ADMIN), g?.trailers.includes("admin")]).toEqual([200, false, false]);
  });
});

// =====================================================================================

describe("claim headers (outputClaimToHeaders)", () => {
  const copies = ["X-User: admin", "x_user: admin", "X_USER: admin", "x-user: admin", "x-tier: platinum", "X_TIER: platinum", "x-n: 1", "x_n: 1"];

  test("with a token: the verified claims, each once; client copies in any spelling removed (raw, upgrade)", async () => {
    const t = await token({ plan: { tier: "gold" }, n: 42 });
    for (const r of await sendAll(inbound, ALL_MODES, [...copies, `Authorization: Bearer ${t}`])) {
      expect([r.mode, named(r.got, "x-user"), named(r.got, "x-tier"), named(r.got, "x-n"), named(r.got, "authorization")]).toEqual([r.mode, ["alice"], ["gold"], ["42"], []]);
    }
  });

  test("without a token (or with a value that is no token): no claim header at all", async () => {
    for (const extra of [[], ["Authorization: Basic YWxpY2U6c2VjcmV0"]]) {
      for (const r of await sendAll(inbound, ALL_MODES, [...copies, ...extra])) {
        expect([r.mode, r.got !== undefined, named(r.got, "x-user"), named(r.got, "x-tier"), named(r.got, "x-n")]).toEqual([r.mode, true, [], [], []]);
      }
    }
  });

  test("forwardOriginalToken: true keeps the token but still replaces claim headers", async () => {
    const t = await token({ sub: "bob" }, FWD);
    for (const r of await sendAll(inbound, ALL_MODES, ["x-user: admin", "X_User: admin", `x-fwd-token: ${t}`])) {
      expect([r.mode, named(r.got, "x-user"), named(r.got, "x-fwd-token")]).toEqual([r.mode, ["bob"], [t]]);
    }
  });

  test("a claim that is not printable ASCII on one line is left out, never split into lines or bytes", async () => {
    const values: unknown[] = [
      "eve\r\nx-admin: 1",
      "eve\nx-admin: 1",
      "eve\rx-admin: 1",
      "eve\u010d\u010ax-admin: 1", // low bytes CR LF if written as latin1
      "eve\u560d\u560ax-admin: 1",
      "alice\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: payments\r\n\r\n",
      "eve\u0000x",
      "eve\tx-admin: 1",
      "eve\u007f",
      " eve",
      "eve ",
      "",
      "é",
      "\u2028x-admin: 1",
      "eve\u0085x-admin: 1",
      "x".repeat(4000), // sent twice (sub, plan.tier): the token stays under the 16 KiB head limit
      "a, admin",
    ];
    const PRINTABLE = /^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/;
    for (const v of values) {
      const t = await token({ sub: v, plan: { tier: v } });
      for (const r of await sendAll(inbound, ["raw-get", "raw-post"], [`Authorization: Bearer ${t}`])) {
        const label = JSON.stringify(v).slice(0, 30);
        expect([label, r.mode, r.status, r.got !== undefined]).toEqual([label, r.mode, 200, true]);
        expect([label, r.mode, named(r.got, "x-admin"), got.some((g) => g.path === "/smuggled")]).toEqual([label, r.mode, [], false]);
        for (const h of ["x-user", "x-tier"]) {
          const seen = named(r.got, h);
          // Left out, or exactly the claim (printable ASCII, one line).
          const ok = seen.length === 0 || (seen.length === 1 && seen[0] === v && PRINTABLE.test(seen[0]!));
          expect([label, r.mode, h, ok]).toEqual([label, r.mode, h, true]);
        }
      }
    }
  }, 15_000);

  test("numbers and booleans as text; objects, arrays and null left out", async () => {
    const cases: [unknown, string[]][] = [
      [42, ["42"]],
      [-1.5, ["-1.5"]],
      [1e21, ["1e+21"]],
      [true, ["true"]],
      [false, ["false"]],
      [null, []],
      [{ toString: "admin" }, []],
      [["admin"], []],
    ];
    for (const [n, want] of cases) {
      const t = await token({ n });
      const [get, post] = await sendAll(inbound, ["raw-get", "raw-post"], [`Authorization: Bearer ${t}`, "x-n: 7"]);
      expect([n, named(get!.got, "x-n"), named(post!.got, "x-n")]).toEqual([n, want, want]);
    }
  });
});

// =====================================================================================

describe("authorization reads headers as the service does", () => {
  test("a deny on x-tenant: any spelling the service would read as x-tenant is denied, or does not reach it", async () => {
    const cases: string[][] = [
      ["x_tenant: evil"],
      ["X_Tenant: evil"],
      ["X-TENANT: evil"],
      ["x-tenant: ok", "x_tenant: evil"],
      ["x-tenant: ok", "x-tenant: evil"],
      ["x-tenant: ok, evil"],
      ["Connection: x-tenant", "x_tenant: evil"],
      ["Connection: x_tenant", "x-tenant: evil"],
      ["Connection: X_TENANT", "X-Tenant: evil"],
      ["Connection: x-tenant", "x-tenant: evil"],
      ["Connection: x_tenant", "x_tenant: ok", "x-tenant: evil"],
      ["Connection: x-tenant", "x-tenant: ok", "x_tenant: evil"],
    ];
    for (const lines of cases) {
      for (const r of await sendAll(inbound, HTTP_MODES, lines)) {
        const safe = r.status === 403 ? r.got === undefined : r.status === 200 && !elements(r.got, "x-tenant").includes("evil");
        expect([lines.join(" | "), r.mode, r.status, safe]).toEqual([lines.join(" | "), r.mode, r.status, true]);
      }
    }
  }, 15_000);

  test("an allow on x-tenant: t1 lets in only requests whose every x-tenant (any spelling) the service sees is t1", async () => {
    const cases: [string[], number | undefined][] = [
      [["x-tenant: t1"], 200],
      [["x_tenant: t1"], 200],
      [["x-tenant: t1", "x_tenant: t2"], 403],
      [["x_tenant: t1", "x-tenant: t2"], 403],
      [["x-tenant: t1", "Connection: x_tenant", "x_tenant: t2"], undefined],
      [["x_tenant: t1", "Connection: x-tenant", "x-tenant: t2"], undefined],
      [["Connection: x_tenant", "x_tenant: t1", "x-tenant: t2"], undefined],
      [["x-tenant: t1", "Connection: x-tenant"], 403],
    ];
    for (const [lines, want] of cases) {
      for (const r of await sendAll(inbound, HTTP_MODES, lines, "/t1")) {
        const seen = elements(r.got, "x-tenant");
        const safe = r.status === 403 ? r.got === undefined : r.status === 200 && seen.length > 0 && seen.every((e) => e === "t1");
        expect([lines.join(" | "), r.mode, safe, want === undefined || r.status === want]).toEqual([lines.join(" | "), r.mode, true, true]);
      }
    }
  }, 15_000);

  test("an allow on a claim header (x-user: alice) never sees a client's copy of it", async () => {
    for (const lines of [["x-user: alice"], ["x_user: alice"], ["X_USER: alice", "x-user: alice"]]) {
      for (const r of await sendAll(inbound, HTTP_MODES, lines, "/u")) expect([lines[0], r.mode, r.status, r.got]).toEqual([lines[0], r.mode, 403, undefined]);
    }
  });

  test("an allow on x-user never sees a client's copy when the token carries no sub for it (claim left out)", async () => {
    const t = await token({ sub: "alice\r\nx: y" });
    for (const r of await sendAll(inbound, HTTP_MODES, [`Authorization: Bearer ${t}`, "x_user: alice"], "/u")) expect([r.mode, r.status, r.got]).toEqual([r.mode, 403, undefined]);
  });

  test("a deny on a claim header (x-user: banned) sees the value the proxy sends the service", async () => {
    const t = await token({ sub: "banned" });
    const rs = await sendAll(inbound, HTTP_MODES, [`Authorization: Bearer ${t}`]);
    expect(rs.map((r) => [r.mode, r.status, named(r.got, "x-user")])).toEqual(HTTP_MODES.map((m) => [m, 403, []]));
  });

  test("a deny on x-user is not fooled by a client copy the proxy removes (no token: nothing reaches the service as x-user)", async () => {
    for (const r of await sendAll(inbound, HTTP_MODES, ["x_user: banned", "x-user: banned"])) {
      const safe = r.status === 403 ? r.got === undefined : named(r.got, "x-user").length === 0;
      expect([r.mode, safe]).toEqual([r.mode, true]);
    }
  });
});

// =====================================================================================

describe("the token's header", () => {
  test("forwardOriginalToken: false removes the token's header in both spellings, whichever spelling carried the token", async () => {
    const t = await token({}, JWTH);
    const cases = [
      [`x-jwt: Bearer ${t}`, "x_jwt: stale-value"],
      [`x_jwt: Bearer ${t}`, "x-jwt: stale-value"],
    ];
    for (const lines of cases) {
      const rs = await sendAll(inbound, HTTP_MODES, lines);
      expect([lines[0]!.slice(0, 6), rs.map((r) => [r.mode, r.status, named(r.got, "x-jwt")])]).toEqual([lines[0]!.slice(0, 6), HTTP_MODES.map((m) => [m, 200, []])]);
    }
  });

  test("a forged token in the other spelling of a token header is verified (401), never relayed", async () => {
    const f = await token({ sub: "mallory" }, JWTH, attacker);
    for (const line of [`x_jwt: Bearer ${f}`, `X_JWT: bearer ${f}`, `X-Jwt: Bearer ${f}`]) {
      for (const r of await sendAll(inbound, ["raw-get", "raw-post"], [line])) expect([line.slice(0, 6), r.mode, r.status, r.got]).toEqual([line.slice(0, 6), r.mode, 401, undefined]);
    }
  });
});

// =====================================================================================

describe("header names configured with '_' (they read as '-' for the service)", () => {
  test("a claim header configured as x_und_user: the client's x-und-user never reaches the service (or the config is refused)", async () => {
    if (underscored.port === undefined) return expect(underscored.refused).toContain("x_und");
    const modes: Mode[] = ["raw-get", "raw-post"];
    const rs = await sendAll(underscored.port, modes, ["x-und-user: admin", "X-Und-User: admin"]);
    expect(rs.map((r) => [r.mode, r.got !== undefined, elements(r.got, "x-und-user")])).toEqual(modes.map((m) => [m, true, []]));
  });

  test("a token header configured as x_und_token: a forged token in x-und-token is verified, never relayed (or the config is refused)", async () => {
    if (underscored.port === undefined) return expect(underscored.refused).toContain("x_und");
    const f = await token({ sub: "mallory" }, UND, attacker);
    const modes: Mode[] = ["raw-get", "raw-post"];
    const rs = await sendAll(underscored.port, modes, [`x-und-token: Bearer ${f}`]);
    expect(rs.map((r) => [r.mode, r.status, named(r.got, "x-und-token").some((v) => v.includes(f))])).toEqual(modes.map((m) => [m, 401, false]));
  });

  test("a claim header configured as x_mesh_client_id: no end user's sub reaches the service as its caller identity (or the config is refused)", async () => {
    if (identityClaims.port === undefined) return expect(identityClaims.refused).toMatch(/x_mesh_client_id|l5d_client_id/);
    const t = await token({ sub: ADMIN });
    const modes: Mode[] = ["raw-get", "raw-post"];
    const rs = await sendAll(identityClaims.port, modes, [`Authorization: Bearer ${t}`]);
    expect(rs.map((r) => [r.mode, r.status, named(r.got, "x-mesh-client-id"), named(r.got, "l5d-client-id")])).toEqual(modes.map((m) => [m, 200, [ORDERS], []]));
  });
});

describe("the schema", () => {
  const jwks = { keys: [{ kty: "EC", crv: "P-256", x: "AA", y: "AA" }] };
  const parse = (rule: Record<string, unknown>) =>
    parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind: "RequestAuthentication", metadata: { name: "p", namespace: "default" }, spec: { service: "payments", jwtRules: [{ issuer: INLINE, jwks, ...rule }] } });

  test("a claim header or token header that is a header the proxy removes or sets, in any spelling, is refused", () => {
    const names = ["x_mesh_client_id", "X_Mesh_Client-Id", "l5d_client_id", "x_forwarded_client_cert", "proxy_authorization", "transfer_encoding", "content_length", "keep_alive"];
    const accepted = names.flatMap((name) => [
      ...(parse({ outputClaimToHeaders: [{ header: name, claim: "sub" }] }).ok ? [`claim ${name}`] : []),
      ...(parse({ fromHeaders: [{ name }] }).ok ? [`token ${name}`] : []),
    ]);
    expect(accepted).toEqual([]);
  });

  test("a claim header that is the token's header in the other spelling is refused", () => {
    const a = parse({ fromHeaders: [{ name: "x-jwt" }], outputClaimToHeaders: [{ header: "x_jwt", claim: "sub" }] }).ok;
    const b = parse({ fromHeaders: [{ name: "x_jwt" }], outputClaimToHeaders: [{ header: "X-JWT", claim: "sub" }] }).ok;
    expect([a, b]).toEqual([false, false]);
  });

  test("one rule naming the same claim header twice (any spelling or case) is refused: the raw path would send two lines, the loopback path one", () => {
    const pairs = [["x-user", "X-User"], ["x-user", "x_user"]];
    expect(pairs.map(([a, b]) => [a, b, parse({ outputClaimToHeaders: [{ header: a, claim: "sub" }, { header: b, claim: "email" }] }).ok])).toEqual(pairs.map(([a, b]) => [a, b, false]));
  });

  test("a header name written with '_' is refused or kept as '-' (one name for the proxy, as for the service)", () => {
    const claim = parse({ outputClaimToHeaders: [{ header: "x_user", claim: "sub" }] });
    const tokenAt = parse({ fromHeaders: [{ name: "x_token" }] });
    const rule = (r: typeof claim) => (r.ok ? (r.manifest as { spec: { jwtRules: Record<string, unknown>[] } }).spec.jwtRules[0]! : undefined);
    const claimName = (rule(claim)?.outputClaimToHeaders as { header: string }[] | undefined)?.[0]?.header;
    const tokenName = (rule(tokenAt)?.fromHeaders as { name: string }[] | undefined)?.[0]?.name;
    expect([claim.ok ? claimName : "refused", tokenAt.ok ? tokenName : "refused"].map((n) => (n === "refused" ? "x-ok" : n!.replace(/^x-(user|token)$/, "x-ok")))).toEqual(["x-ok", "x-ok"]);
  });
});
