/**
 * Review (an attacker's) of the certificate authority behind the control plane, its join
 * (bootstrap) tokens and its APIs. Nothing is mocked.
 *
 * Topology, all on loopback:
 *   - one real `mesh control-plane` process (embedded store, a CA it creates in a temporary
 *     directory, --admin-identity spiffe://mesh.local/ns/mesh-system/sa/ops), with its three
 *     listeners: the mTLS API (sidecars; /admin/* for admin identities), the bootstrap port
 *     (server-authenticated TLS, a join token and a CSR for a first certificate) and the
 *     plain-HTTP admin port (bearer token);
 *   - this test process as every client: sidecars' certificates from `mesh ca issue`, and
 *     certificates, CSRs and tokens crafted here (with the test's own copy of the CA and
 *     join-token key where an attack needs something that verifies up to a point); and as a
 *     local process on the control plane's host with no certificate, connecting from
 *     127.0.0.2 (still loopback) to the loopback HTTP server behind the mTLS API;
 *   - one slow body on the API port, started before the first test and checked in the last
 *     (the API's idle timeout is 60 s), so the file need not wait for it twice;
 *   - two short-lived `mesh control-plane` processes that must refuse to start.
 *
 * What must hold: a CSR gets at most the caller's own identity (the token's at bootstrap,
 * the certificate's at renewal) and nothing more; a forged, expired, replayed or revoked
 * join token gets nothing; a workload certificate cannot use the admin API; a certificate
 * that is not a valid X.509-SVID of this trust domain gets no HTTP answer at all; bodies,
 * floods and slow clients are bounded; every refusal is a 4xx (never a 5xx), and the control
 * plane keeps serving. Every process started here is stopped by handle (stopAll) in afterAll.
 *
 * Three faults this review found, each with its test, fixed since:
 *   - the API's inner HTTP server found the caller's identity by source port alone: any
 *     local process could connect to it from 127.0.0.2 with the source port of a connected
 *     sidecar or admin and act as it (renew a certificate of that identity for its own key,
 *     or mint join tokens through /admin). The bridge now keys identities by address and port;
 *   - the 4 MiB body cap was checked on Content-Length only: a chunked body was buffered
 *     whole, also on the unauthenticated bootstrap port;
 *   - --admin took any address: nothing kept the admin API (plain HTTP, bearer token) on
 *     loopback as README and threats.md say it is.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import net from "node:net";
import tls from "node:tls";
import { calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, exportJWK, exportSPKI, SignJWT } from "jose";
import { mesh, tempDir } from "../helpers/cli.ts";
import { startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { makeIntermediate, makeLeaf, makeRoot, fromNow, type Issued, type RootOptions } from "../helpers/certs.ts";
import { startMesh, stopAll } from "../helpers/procs.ts";
import { loadCa, type LoadedCa } from "../../src/ca/authority.ts";
import { issuerOf } from "../../src/control-plane/join-token.ts";
import { TOKEN_KEY_FILE } from "../../src/control-plane/token-key.ts";
import { Certificate } from "../../src/pki/certificate.ts";
import { certToPem, EC_SIGN_ALG, generateKeyPair, importPrivateKeyPem, x509 } from "../../src/pki/x509.ts";

const TD = "mesh.local";
const ORDERS = `spiffe://${TD}/ns/default/sa/orders`;
const PAYMENTS = `spiffe://${TD}/ns/default/sa/payments`;
const OPS = `spiffe://${TD}/ns/mesh-system/sa/ops`;
const MAX_BODY = 4 << 20;

const tmp = tempDir("mesh-review-ca-");
let cp: TestControlPlane;
let ca: LoadedCa;
/** The real signing intermediate, as the certs helpers take an issuer. */
let realIntermediate: Issued;
let orders: ClientCert;
let ops: ClientCert;
/** Every answer with a 5xx status seen from the control plane: there must be none. */
const serverErrors: string[] = [];
/** A slow body on the API port, started first and checked last (its timeout is 60 s). */
let slowApiBody: Promise<Dribble>;

beforeAll(async () => {
  cp = await startControlPlane(tmp.path, ["--admin-identity", OPS]);
  ca = await loadCa(cp.caDir);
  realIntermediate = {
    cert: Certificate.fromDer(new Uint8Array(ca.intermediate.cert.rawData)),
    x509: ca.intermediate.cert,
    keys: ca.intermediate.keys,
    pem: certToPem(ca.intermediate.cert),
    keyPem: "",
    trustDomain: ca.trustDomain,
  };
  orders = await issued("orders", "default");
  ops = await issued("ops", "mesh-system");
  slowApiBody = dribble(cp.ports.api, { client: orders, first: postHead("/v1/certificates/renew", 1000) + "{", every: " ", maxMs: 80_000 });
}, 30_000);

afterAll(async () => {
  try {
    await stopAll();
  } finally {
    tmp.cleanup();
  }
});

// ---------------------------------------------------------------------------------------
// Clients

interface ClientCert {
  /** Leaf then intermediates, PEM. */
  cert: string;
  key: string;
}

interface Answer {
  status?: number;
  body: string;
  json: Record<string, unknown> | undefined;
  /** Set when the connection failed (a refused handshake, a reset). */
  error?: string;
}

async function issued(service: string, namespace: string): Promise<ClientCert> {
  const out = join(tmp.path, "issued", `${namespace}-${service}`);
  const r = await mesh("ca", "issue", "--service", service, "--namespace", namespace, "--ca-dir", cp.caDir, "--out", out);
  if (r.code !== 0) throw new Error(`mesh ca issue: ${r.err}`);
  return { cert: readFileSync(join(out, "chain.pem"), "utf8"), key: readFileSync(join(out, "key.pem"), "utf8") };
}

function clientOf(leaf: Issued, ...chain: Issued[]): ClientCert {
  return { cert: leaf.pem + chain.map((c) => c.pem).join(""), key: leaf.keyPem };
}

function request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): string {
  const text = body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body);
  const framing: Record<string, string> = body === undefined ? {} : { "content-type": "application/json", "content-length": String(Buffer.byteLength(text)) };
  const all = { host: "mesh", connection: "close", ...framing, ...headers };
  return `${method} ${path} HTTP/1.1\r\n${Object.entries(all).map(([k, v]) => `${k}: ${v}`).join("\r\n")}\r\n\r\n${text}`;
}

function postHead(path: string, contentLength: number): string {
  return `POST ${path} HTTP/1.1\r\nhost: mesh\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${contentLength}\r\n\r\n`;
}

function parseAnswer(raw: string, error?: string): Answer {
  const m = /^HTTP\/1\.1 (\d{3})/.exec(raw);
  const body = raw.includes("\r\n\r\n") ? raw.slice(raw.indexOf("\r\n\r\n") + 4) : "";
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(body) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  const status = m ? Number(m[1]) : undefined;
  if (status !== undefined && status >= 500) serverErrors.push(`${status} ${body.slice(0, 200)}`);
  return { ...(status !== undefined ? { status } : {}), body, json, ...(error !== undefined ? { error } : {}) };
}

/** One request on a fresh connection (TLS unless `plain`), read until the server closes. */
function exchange(port: number, bytes: string | Buffer, opts: { client?: ClientCert; plain?: boolean; timeoutMs?: number; local?: { address: string; port: number } } = {}): Promise<Answer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | undefined;
    let done = false;
    const socket = opts.plain
      ? net.connect({ host: "127.0.0.1", port, ...(opts.local ? { localAddress: opts.local.address, localPort: opts.local.port } : {}) })
      : tls.connect({ host: "127.0.0.1", port, ca: readFileSync(cp.bundle), checkServerIdentity: () => undefined, ...(opts.client ? { cert: opts.client.cert, key: opts.client.key } : {}) });
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(parseAnswer(Buffer.concat(chunks).toString("latin1"), error));
    };
    const timer = setTimeout(() => ((error ??= "timeout"), finish()), opts.timeoutMs ?? 10_000);
    socket.once(opts.plain ? "connect" : "secureConnect", () => socket.write(bytes));
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.on("error", (e: Error) => void (error ??= e.message));
    socket.on("close", finish);
  });
}

const api = (client: ClientCert | undefined, method: string, path: string, body?: unknown) =>
  exchange(cp.ports.api, request(method, path, body), client ? { client } : {});
const renew = (client: ClientCert, csrPem: string, namespace = "default", service = "orders", extra: Record<string, unknown> = {}) =>
  api(client, "POST", "/v1/certificates/renew", { namespace, service, csr: csrPem, ...extra });
const bootstrap = (body: unknown) => exchange(cp.ports.bootstrap, request("POST", "/v1/bootstrap", body));

async function mintToken(service: string, extra: Record<string, unknown> = {}): Promise<{ token: string; id: string }> {
  const res = await cp.admin("POST", "/v1/join-tokens", { service, ...extra });
  if (res.status !== 200) throw new Error(`join token: ${res.status} ${await res.text()}`);
  return (await res.json()) as { token: string; id: string };
}

async function tokenIds(): Promise<string[]> {
  const res = await cp.admin("GET", "/v1/join-tokens");
  return ((await res.json()) as { items: { id: string }[] }).items.map((t) => t.id).sort();
}

/** Token ids in `after` that were not in `before` (records of expired tokens may lapse meanwhile). */
function newIds(before: string[], after: string[]): string[] {
  return after.filter((id) => !before.includes(id));
}

/** The SPIFFE ID of the leaf of a chain the control plane returned. */
function leafIdOf(chainPem: string): string {
  const leaf = new x509.X509Certificate(chainPem.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----");
  const names = leaf.getExtension(x509.SubjectAlternativeNameExtension)!.names.items;
  return names.map((n) => `${n.type}:${n.value}`).join(",");
}

/** The control plane answers and its process lives. */
async function stillServing(): Promise<void> {
  expect(cp.proc.exitCode).toBeNull();
  const r = await renew(orders, await csr());
  expect(r.status).toBe(200);
}

// ---------------------------------------------------------------------------------------
// CSRs

interface CsrOptions {
  cn?: string | null;
  sans?: x509.JsonGeneralName[];
  extensions?: x509.Extension[];
  keys?: CryptoKeyPair;
  signingAlgorithm?: EcdsaParams;
  /** Flip a byte of the signature. */
  tamper?: boolean;
}

async function csr(opts: CsrOptions = {}): Promise<string> {
  const keys = opts.keys ?? (await generateKeyPair());
  const extensions = [...(opts.extensions ?? [])];
  const sans = opts.sans ?? [{ type: "url", value: ORDERS }];
  if (sans.length) extensions.push(new x509.SubjectAlternativeNameExtension(sans));
  const req = await x509.Pkcs10CertificateRequestGenerator.create({
    name: opts.cn === null ? "O=review" : `CN=${opts.cn ?? "orders"}`,
    keys,
    signingAlgorithm: opts.signingAlgorithm ?? EC_SIGN_ALG,
    extensions,
  });
  let der = new Uint8Array(req.rawData);
  if (opts.tamper) {
    der = der.slice();
    der[der.length - 5] = der[der.length - 5]! ^ 0xff;
  }
  return x509.PemConverter.encode(der.buffer as ArrayBuffer, "CERTIFICATE REQUEST");
}

/** A CSR made by openssl (for keys WebCrypto will not make), CN=orders. */
function opensslCsr(name: string, keyArgs: string[], pre?: string[]): string {
  const key = join(tmp.path, `${name}.key`);
  const out = join(tmp.path, `${name}.csr`);
  if (pre) {
    const p = Bun.spawnSync(["openssl", ...pre.map((a) => (a === "KEY" ? key : a))], { stderr: "pipe" });
    if (p.exitCode !== 0) throw new Error(`openssl ${pre.join(" ")}: ${p.stderr.toString()}`);
  }
  const p = Bun.spawnSync(["openssl", "req", "-new", ...keyArgs.map((a) => (a === "KEY" ? key : a)), "-out", out, "-subj", "/CN=orders", "-addext", `subjectAltName=URI:${ORDERS}`], { stderr: "pipe" });
  if (p.exitCode !== 0) throw new Error(`openssl req for ${name}: ${p.stderr.toString()}`);
  return readFileSync(out, "utf8");
}

/** Nothing was issued: a 4xx with an error, and no certificate in the answer. */
function refused(a: Answer, status: number | number[], message?: string): void {
  const allowed = Array.isArray(status) ? status : [status];
  const got = { status: a.status !== undefined && allowed.includes(a.status) ? "as expected" : (a.status ?? `no answer (${a.error ?? "closed"})`), hasChain: a.body.includes("BEGIN CERTIFICATE") };
  expect(got).toEqual({ status: "as expected", hasChain: false });
  if (message !== undefined) expect(String(a.json?.error)).toContain(message);
}

// ---------------------------------------------------------------------------------------
// 1. Another identity

describe("1. a CSR for an identity other than the caller's gets nothing", () => {
  test("renewal over mTLS as orders: another service, namespace or trust domain, in the body or in the CSR, is refused", async () => {
    refused(await renew(orders, await csr({ sans: [{ type: "url", value: PAYMENTS }], cn: "payments" }), "default", "payments"), 403, "may not act for service default/payments");
    refused(await renew(orders, await csr({ sans: [{ type: "url", value: `spiffe://${TD}/ns/shop/sa/orders` }] }), "shop", "orders"), 403, "may not act for service shop/orders");
    refused(await renew(orders, await csr({ sans: [{ type: "url", value: PAYMENTS }] })), 400, `url:${PAYMENTS}`);
    refused(await renew(orders, await csr({ sans: [{ type: "url", value: `spiffe://${TD}/ns/shop/sa/orders` }] })), 400, "is not granted");
    refused(await renew(orders, await csr({ sans: [{ type: "url", value: "spiffe://other.example/ns/default/sa/orders" }] })), 400, "is not granted");
    refused(await renew(orders, await csr({ cn: "payments", sans: [] })), 400, 'subject CN "payments"');
    refused(await renew(orders, await csr(), "default", "orders", { trustDomain: "other.example" }), 400, "trustDomain");
    // A renewal of its own identity works, and yields exactly that identity.
    const ok = await renew(orders, await csr());
    expect(ok.status).toBe(200);
    expect(leafIdOf(String(ok.json?.chain))).toBe(`url:${ORDERS}`);
  });

  test("bootstrap with a token bound to orders: a CSR for payments, another namespace or trust domain is refused, and does not burn the token", async () => {
    const { token } = await mintToken("orders");
    refused(await bootstrap({ token, csr: await csr({ sans: [{ type: "url", value: PAYMENTS }], cn: "payments" }) }), 400, "is not the granted service");
    refused(await bootstrap({ token, csr: await csr({ sans: [{ type: "url", value: PAYMENTS }] }) }), 400, `url:${PAYMENTS}`);
    refused(await bootstrap({ token, csr: await csr({ sans: [{ type: "url", value: `spiffe://${TD}/ns/shop/sa/orders` }] }) }), 400, "is not granted");
    refused(await bootstrap({ token, csr: await csr({ sans: [{ type: "url", value: "spiffe://other.example/ns/default/sa/orders" }] }) }), 400, "is not granted");
    // The body cannot name an identity of its own.
    refused(await bootstrap({ token, csr: await csr({ sans: [{ type: "url", value: PAYMENTS }], cn: "payments" }), service: "payments" }), 400, "service");
    refused(await bootstrap({ token, csr: await csr(), namespace: "shop" }), 400, "namespace");
    // The same token, with a CSR for its own identity: one certificate, for orders only.
    const ok = await bootstrap({ token, csr: await csr() });
    expect(ok.status).toBe(200);
    expect(leafIdOf(String(ok.json?.chain))).toBe(`url:${ORDERS}`);
    expect(ok.json?.spiffeId).toBe(ORDERS);
  });
});

// ---------------------------------------------------------------------------------------
// 2. More than the identity

describe("2. a CSR asking for more than the identity gets nothing (renewal and bootstrap alike)", () => {
  let token: string;
  beforeAll(async () => {
    token = (await mintToken("orders")).token;
  });

  const ext = (e: x509.Extension) => ({ extensions: [e] });
  const withOrders = (...more: x509.JsonGeneralName[]): CsrOptions => ({ sans: [{ type: "url", value: ORDERS }, ...more] });
  const cases: [string, () => Promise<string> | string, string][] = [
    ["a second URI SAN", async () => csr(withOrders({ type: "url", value: PAYMENTS })), `url:${PAYMENTS}`],
    ["the same URI SAN twice and another", async () => csr(withOrders({ type: "url", value: ORDERS }, { type: "url", value: OPS })), `url:${OPS}`],
    ["a DNS SAN", async () => csr(withOrders({ type: "dns", value: "orders.default.svc" })), "dns:orders.default.svc"],
    ["a wildcard DNS SAN", async () => csr(withOrders({ type: "dns", value: "*.mesh.local" })), "dns:*.mesh.local"],
    ["an IP SAN", async () => csr(withOrders({ type: "ip", value: "127.0.0.1" })), "ip:127.0.0.1"],
    ["an email SAN", async () => csr(withOrders({ type: "email", value: "orders@mesh.local" })), "email:orders@mesh.local"],
    ["CA=true", async () => csr(ext(new x509.BasicConstraintsExtension(true, undefined, true))), "CA=true"],
    ["CA=true with pathLen 5", async () => csr(ext(new x509.BasicConstraintsExtension(true, 5, true))), "CA=true"],
    ["keyCertSign", async () => csr(ext(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature))), "keyCertSign"],
    ["cRLSign", async () => csr(ext(new x509.KeyUsagesExtension(x509.KeyUsageFlags.cRLSign))), "cRLSign"],
    ["extended key usage codeSigning", async () => csr(ext(new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.codeSigning]))), "extended key usage"],
    ["extended key usage anyExtendedKeyUsage", async () => csr(ext(new x509.ExtendedKeyUsageExtension(["2.5.29.37.0"]))), "extended key usage 2.5.29.37.0"],
    ["an extension mesh does not grant (nameConstraints)", async () => csr(ext(new x509.Extension("2.5.29.30", true, new Uint8Array([0x30, 0x00])))), "extension 2.5.29.30"],
    ["a signature that does not verify", async () => csr({ tamper: true }), "signature does not verify"],
    ["a signature by another key (the key swapped after signing)", async () => swappedKeyCsr(), "signature does not verify"],
    ["a URI SAN with '..'", async () => csr({ sans: [{ type: "url", value: `spiffe://${TD}/ns/default/sa/payments/../orders` }] }), "is not granted"],
    ["a URI SAN with a port", async () => csr({ sans: [{ type: "url", value: `spiffe://${TD}:443/ns/default/sa/orders` }] }), "is not granted"],
    ["a URI SAN with a query", async () => csr({ sans: [{ type: "url", value: `${ORDERS}?admin=1` }] }), "is not granted"],
    ["a URI SAN with a fragment", async () => csr({ sans: [{ type: "url", value: `${ORDERS}#x` }] }), "is not granted"],
    ["a percent-encoded URI SAN", async () => csr({ sans: [{ type: "url", value: `spiffe://${TD}/ns/default/sa/%6frders` }] }), "is not granted"],
    ["a URI SAN with an encoded slash", async () => csr({ sans: [{ type: "url", value: `spiffe://${TD}/ns/default%2Fsa%2Forders` }] }), "is not granted"],
    ["an upper-case URI SAN", async () => csr({ sans: [{ type: "url", value: `SPIFFE://MESH.LOCAL/ns/default/sa/orders` }] }), "is not granted"],
    ["a URI SAN with a trailing slash", async () => csr({ sans: [{ type: "url", value: `${ORDERS}/` }] }), "is not granted"],
    ["an RSA 1024 key", () => opensslCsr("rsa1024", ["-newkey", "rsa:1024", "-nodes", "-keyout", "KEY"]), "RSASSA-PKCS1-v1_5 is not accepted"],
    ["an RSA 2048 key", () => opensslCsr("rsa2048", ["-newkey", "rsa:2048", "-nodes", "-keyout", "KEY"]), "is not accepted"],
    ["a P-192 key", () => opensslCsr("p192", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime192v1", "-nodes", "-keyout", "KEY"]), "is not accepted"],
    ["a secp256k1 key", () => opensslCsr("k256", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1", "-nodes", "-keyout", "KEY"]), "is not accepted"],
    ["a brainpoolP256r1 key", () => opensslCsr("bp256", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:brainpoolP256r1", "-nodes", "-keyout", "KEY"]), "is not accepted"],
    ["an Ed25519 key", () => opensslCsr("ed25519", ["-newkey", "ed25519", "-nodes", "-keyout", "KEY"]), "Ed25519 is not accepted"],
    ["a P-256 key with explicit curve parameters", () => opensslCsr("explicit", ["-key", "KEY"], ["ecparam", "-name", "prime256v1", "-param_enc", "explicit", "-genkey", "-noout", "-out", "KEY"]), "is not accepted"],
    ["a certificate instead of a CSR", () => readFileSync(cp.bundle, "utf8"), "not a PEM CERTIFICATE REQUEST"],
  ];

  for (const [name, make, message] of cases) {
    test(`refuses ${name}`, async () => {
      const pem = await make();
      refused(await renew(orders, pem), 400, message);
      refused(await bootstrap({ token, csr: pem }), 400, message);
    });
  }

  test("the token refused for every bad CSR above was never spent: it still yields one certificate", async () => {
    const ok = await bootstrap({ token, csr: await csr() });
    expect(ok.status).toBe(200);
    refused(await bootstrap({ token, csr: await csr() }), 401, "already used");
  });

  test("no long TTL: the APIs take no TTL, a join token lives at most 24h, and --cert-ttl past 720h stops the control plane from starting", async () => {
    refused(await renew(orders, await csr(), "default", "orders", { ttl: "8760h" }), 400, "ttl");
    refused(await bootstrap({ token: (await mintToken("orders")).token, csr: await csr(), ttl: "8760h" }), 400, "ttl");
    const long = await cp.admin("POST", "/v1/join-tokens", { service: "orders", ttl: "800h" });
    expect(long.status).toBe(400);
    // An issued certificate lives the control plane's --cert-ttl (default 24h), whatever the CSR says.
    const ok = await renew(orders, await csr());
    const notAfter = Date.parse(String(ok.json?.notAfter));
    expect(notAfter - Date.now()).toBeLessThanOrEqual(24 * 3600_000 + 5_000);
    const dir = join(tmp.path, "long-ttl");
    const outcome = await startMesh(["control-plane", "--data-dir", join(dir, "data"), "--ca-dir", join(dir, "ca"), "--api", "127.0.0.1:0", "--bootstrap", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--cert-ttl", "800h"]).then(
      () => "started",
      (e: Error) => e.message,
    );
    expect(outcome).toContain("TTL exceeds the maximum of 720h");
  }, 30_000);
});

/** A CSR whose SubjectPublicKeyInfo was replaced by another key's after it was signed. */
async function swappedKeyCsr(): Promise<string> {
  const a = await x509.Pkcs10CertificateRequestGenerator.create({ name: "CN=orders", keys: await generateKeyPair(), signingAlgorithm: EC_SIGN_ALG });
  const otherKeys = await generateKeyPair();
  const spkiA = new Uint8Array(a.publicKey.rawData);
  const spkiB = new Uint8Array(await crypto.subtle.exportKey("spki", otherKeys.publicKey));
  const der = Buffer.from(a.rawData);
  const at = der.indexOf(Buffer.from(spkiA));
  if (at < 0 || spkiA.length !== spkiB.length) throw new Error("could not swap the key");
  der.set(spkiB, at);
  return x509.PemConverter.encode(new Uint8Array(der).buffer, "CERTIFICATE REQUEST");
}

// ---------------------------------------------------------------------------------------
// 3. Join tokens

describe("3. join tokens: replayed, expired, revoked, forged or oversized get nothing", () => {
  let tokenKey: CryptoKeyPair;
  let kid: string;
  let expiring: Promise<{ token: string; expiresAt: number }>;
  beforeAll(async () => {
    tokenKey = await importPrivateKeyPem(readFileSync(join(cp.caDir, TOKEN_KEY_FILE), "utf8"));
    kid = await calculateJwkThumbprint(await exportJWK(tokenKey.publicKey));
    // Minted now, checked in the last test of this group, once past its end and jose's 5 s tolerance.
    expiring = cp.admin("POST", "/v1/join-tokens", { service: "orders", ttl: "1s" }).then(async (r) => {
      const j = (await r.json()) as { token: string; expiresAt: string };
      return { token: j.token, expiresAt: Date.parse(j.expiresAt) };
    });
  });

  test("a token is redeemed once; a replay gets 401 and no certificate", async () => {
    const { token } = await mintToken("orders");
    expect((await bootstrap({ token, csr: await csr() })).status).toBe(200);
    refused(await bootstrap({ token, csr: await csr() }), 401, "already used");
    refused(await bootstrap({ token, csr: await csr() }), 401, "already used");
  });

  test("20 clients redeeming one single-use token at once: exactly one certificate", async () => {
    const { token } = await mintToken("orders");
    const csrs = await Promise.all(Array.from({ length: 20 }, () => csr()));
    const answers = await Promise.all(csrs.map((c) => bootstrap({ token, csr: c })));
    expect(answers.filter((a) => a.status === 200)).toHaveLength(1);
    for (const a of answers.filter((x) => x.status !== 200)) refused(a, 401);
  }, 30_000);

  test("a revoked token gets 401", async () => {
    const { token, id } = await mintToken("orders");
    expect((await cp.admin("DELETE", `/v1/join-tokens/${id}`)).status).toBe(200);
    refused(await bootstrap({ token, csr: await csr() }), 401, "revoked");
  });

  test("forgeries around a good, unused token get 401; the good token still works afterwards", async () => {
    const good = await mintToken("orders");
    const claims = decodeJwt(good.token);
    const header = decodeProtectedHeader(good.token);
    expect(header.kid).toBe(kid);
    const [h, p, s] = good.token.split(".") as [string, string, string];
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const now = Math.floor(Date.now() / 1000);
    const signed = (c: Record<string, unknown>, hdr: Record<string, unknown> = {}) =>
      new SignJWT({ ...claims, ...c }).setProtectedHeader({ alg: "ES256", typ: "JWT", kid, ...hdr } as never).sign(tokenKey.privateKey);
    const attacker = await generateKeyPair();
    const paymentsClaims = { ...claims, svc: "payments", sub: PAYMENTS };
    const forged: [string, string, string][] = [
      ["payload changed to payments, signature kept", `${h}.${b64(paymentsClaims)}.${s}`, "signature does not verify"],
      ["signature bit flipped", `${h}.${p}.${s.slice(0, 10)}${s[10] === "A" ? "B" : "A"}${s.slice(11)}`, "signature does not verify"],
      ["signature removed", `${h}.${p}.`, ""],
      ["alg none with our kid", `${b64({ alg: "none", kid })}.${p}.`, "algorithm not accepted"],
      ["HS256 keyed with our public key", await new SignJWT(claims).setProtectedHeader({ alg: "HS256", kid }).sign(new TextEncoder().encode(await exportSPKI(tokenKey.publicKey))), "algorithm not accepted"],
      ["another key under our kid", await new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid }).sign(attacker.privateKey), "signature does not verify"],
      ["an embedded jwk of another key", await new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid, jwk: await exportJWK(attacker.publicKey) } as never).sign(attacker.privateKey), 'header "jwk"'],
      ["an unknown kid", await signed({}, { kid: "other" }), "unknown key"],
      // With the real key (as if it leaked), the store's record still binds the jti to orders, and times are checked.
      ["our key, payments, the orders token's jti", await signed({ svc: "payments", sub: PAYMENTS }), "record is for another identity"],
      ["our key, another namespace, the orders token's jti", await signed({ ns: "mesh-system", svc: "ops", sub: OPS }), "record is for another identity"],
      ["our key, not valid for an hour", await signed({ nbf: now + 3600 }), "nbf"],
      ["our key, expired an hour ago", await signed({ iat: now - 7200, nbf: now - 7200, exp: now - 3600 }), "expired"],
      ["our key, another audience", await signed({ aud: "other" }), "aud"],
      ["our key, another issuer", await signed({ iss: issuerOf("other.example") }), "iss"],
      ["our key, a jti never issued", await signed({ jti: crypto.randomUUID() }), "never issued"],
    ];
    // A CSR with no name at all fits any grant, so only the token can refuse.
    const neutral = await csr({ cn: null, sans: [] });
    for (const [name, token, message] of forged) {
      const a = await bootstrap({ token, csr: neutral });
      expect({ name, status: a.status }).toEqual({ name, status: 401 });
      refused(a, 401, message);
    }
    const ok = await bootstrap({ token: good.token, csr: await csr() });
    expect(ok.status).toBe(200);
  }, 30_000);

  test("the control plane's own identity: no join token is minted for it, and one signed for it all the same gets nothing", async () => {
    // Sidecars trust mesh-system/control-plane as the control plane: a workload holding it could serve them any config.
    const minted = await cp.admin("POST", "/v1/join-tokens", { namespace: "mesh-system", service: "control-plane" });
    expect(minted.status).toBe(400);
    expect(await minted.text()).toContain("the control plane's own identity");
    const claims = decodeJwt((await mintToken("orders")).token);
    const token = await new SignJWT({ ...claims, ns: "mesh-system", svc: "control-plane", sub: `spiffe://${TD}/ns/mesh-system/sa/control-plane` })
      .setProtectedHeader({ alg: "ES256", typ: "JWT", kid })
      .sign(tokenKey.privateKey);
    refused(await bootstrap({ token, csr: await csr({ cn: null, sans: [] }) }), 401, "the control plane's own identity");
  });

  test("a 1 MiB token, and a body past the 4 MiB cap, get a 400 at once", async () => {
    refused(await bootstrap({ token: "a".repeat(1 << 20), csr: await csr() }), 400, "token");
    const big = await exchange(cp.ports.bootstrap, postHead("/v1/bootstrap", 5 << 20) + '{"token":"');
    refused(big, 400, `at most ${MAX_BODY}`);
  });

  test("an expired token gets 401 and no certificate", async () => {
    const { token, expiresAt } = await expiring;
    await Bun.sleep(Math.max(0, expiresAt + 5_500 - Date.now()));
    refused(await bootstrap({ token, csr: await csr() }), 401, "expired");
    await stillServing();
  }, 20_000);
});

// ---------------------------------------------------------------------------------------
// 4. Admin-only APIs

/** Listening TCP ports and connections of a process, from /proc (IPv4). */
function socketsOf(pid: number): { listening: number[]; established: { local: number; remote: number }[] } {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const rows = readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1).filter(Boolean).map((line) => {
    const f = line.trim().split(/\s+/);
    return { local: parseInt(f[1]!.split(":")[1]!, 16), remote: parseInt(f[2]!.split(":")[1]!, 16), state: f[3]!, inode: f[9]! };
  }).filter((r) => inodes.has(r.inode));
  return {
    listening: rows.filter((r) => r.state === "0A").map((r) => r.local),
    established: rows.filter((r) => r.state === "01").map((r) => ({ local: r.local, remote: r.remote })),
  };
}

describe("4. a workload certificate cannot use the admin API; mutations never on GET", () => {
  test("orders' certificate on every admin route through /admin over mTLS: 403, and nothing changes", async () => {
    const tokensBefore = await tokenIds();
    const { id } = await mintToken("payments");
    const manifest = { apiVersion: "mesh.dev/v1alpha1", kind: "Service", metadata: { name: "evil" }, spec: { ports: [{ name: "http", port: 80 }] } };
    const calls: [string, string, unknown?][] = [
      ["PUT", "/admin/v1/manifests", { documents: [{ source: "evil#0", manifest }] }],
      ["DELETE", "/admin/v1/manifests/Service/default/evil"],
      ["POST", "/admin/v1/join-tokens", { service: "payments" }],
      ["POST", "/admin/v1/join-tokens", { namespace: "mesh-system", service: "ops" }],
      ["GET", "/admin/v1/join-tokens"],
      ["DELETE", `/admin/v1/join-tokens/${id}`],
      ["GET", "/admin/v1/status"],
      ["GET", "/admin/v1/endpoints"],
      ["GET", "/admin/v1/proxies"],
      ["GET", "/admin/v1/manifests"],
      ["POST", "/admin/v1/ca/rotate", {}],
      ["GET", "/admin/v1/secrets"],
    ];
    for (const [method, path, body] of calls) {
      const a = await api(orders, method, path, body);
      expect({ method, path, status: a.status }).toEqual({ method, path, status: 403 });
      expect(a.body).not.toContain("token");
    }
    expect(await tokenIds()).toContain(id);
    expect(newIds(tokensBefore, await tokenIds())).toEqual([id]);
    const services = (await (await cp.admin("GET", "/v1/manifests?kind=Service")).json()) as { items: unknown[] };
    expect(JSON.stringify(services.items)).not.toContain("evil");
    // The admin identity may (the control for the 403s above).
    expect((await api(ops, "GET", "/admin/v1/status")).status).toBe(200);
  });

  test("path tricks with orders' certificate reach no admin route", async () => {
    const before = await tokenIds();
    const paths = [
      "//admin/v1/join-tokens", "/admin//v1/join-tokens", "/admin/./v1/join-tokens", "/admin/x/../v1/join-tokens", "/x/../admin/v1/join-tokens",
      "/ADMIN/v1/join-tokens", "/Admin/v1/join-tokens", "/admin%2fv1/join-tokens", "/%61dmin/v1/join-tokens", "/admin/%761/join-tokens",
      "/admin/v1/join-tokens/", "/admin/v1//join-tokens", "/v1/join-tokens", "/v1/../admin/v1/join-tokens", "/admin/v1/join-tokens?x=/admin",
      "/admin/v1/join-tokens;x", "/admin/v1/join-tokens#frag", "http://mesh/admin/v1/join-tokens",
    ];
    for (const path of paths) {
      const a = await api(orders, "POST", path, { service: "payments" });
      expect({ path, refused: [400, 403, 404].includes(a.status ?? 0) ? true : a.status, token: a.body.includes('"token"') }).toEqual({ path, refused: true, token: false });
    }
    expect(newIds(before, await tokenIds())).toEqual([]);
  });

  test("the loopback admin port: no or a wrong bearer token gets 401; GET, HEAD and method overrides never mutate", async () => {
    expect((await cp.admin("POST", "/v1/join-tokens", { service: "payments" }, "")).status).toBe(401);
    expect((await cp.admin("POST", "/v1/join-tokens", { service: "payments" }, "x".repeat(cp.adminToken.length))).status).toBe(401);
    expect((await cp.admin("GET", "/v1/status", undefined, `${cp.adminToken}x`)).status).toBe(401);
    const { id } = await mintToken("payments");
    const before = await tokenIds();
    const manifestsBefore = await (await cp.admin("GET", "/v1/manifests")).text();
    const bearer = { authorization: `Bearer ${cp.adminToken}` };
    const tries: [string, string, Record<string, string>][] = [
      ["GET", "/v1/join-tokens?service=payments&namespace=default", {}],
      ["HEAD", "/v1/join-tokens?service=payments", {}],
      ["GET", "/v1/join-tokens", { "x-http-method-override": "POST" }],
      ["GET", `/v1/join-tokens/${id}`, { "x-http-method-override": "DELETE" }],
      ["GET", `/v1/join-tokens/${id}?_method=DELETE`, {}],
      ["GET", "/v1/manifests/Service/default/orders", { "x-http-method": "DELETE" }],
      ["GET", "/v1/manifests?_method=PUT", {}],
    ];
    for (const [method, path, headers] of tries) {
      const res = await fetch(`http://127.0.0.1:${cp.ports.admin}${path}`, { method, headers: { ...bearer, ...headers } });
      expect(res.status).toBeLessThan(500);
      await res.arrayBuffer();
    }
    expect(newIds(before, await tokenIds())).toEqual([]);
    expect(await tokenIds()).toContain(id);
    expect(await (await cp.admin("GET", "/v1/manifests")).text()).toBe(manifestsBefore);
  });

  test(
    "a local process with no certificate cannot act as an identity connected to the API port (an admin: would mint join tokens; " +
      "a sidecar: would get a certificate of its identity for its own key) by calling the API's loopback HTTP server from 127.0.0.2 " +
      "with the source port of that identity's bridged connection (identities are keyed by source address and port)",
    async () => {
      // An admin (ops) and a sidecar (orders) each hold an mTLS connection to the API port, as tooling and sidecars do.
      const hold = (who: ClientCert) =>
        new Promise<tls.TLSSocket>((resolve, reject) => {
          const s = tls.connect({ host: "127.0.0.1", port: cp.ports.api, cert: who.cert, key: who.key, ca: readFileSync(cp.bundle), checkServerIdentity: () => undefined });
          s.once("secureConnect", () => s.write("GET /v1/config?namespace=nobody&service=nobody HTTP/1.1\r\nhost: mesh\r\n\r\n"));
          s.once("data", () => resolve(s));
          s.once("error", reject);
        });
      const held = [await hold(ops), await hold(orders)];
      try {
        // The bridge's loopback connections: from 127.0.0.1:<source port> to a listener of the control plane that is none of its public ports.
        const ready = [cp.ports.api, cp.ports.bootstrap, cp.ports.admin];
        const own = socketsOf(cp.proc.pid);
        const links = own.established.filter((c) => own.listening.includes(c.remote) && !ready.includes(c.remote));
        expect(links.length).toBeGreaterThanOrEqual(2);
        const before = await tokenIds();
        const attackerKeyCsr = await csr({ cn: null, sans: [] });
        const won: string[] = [];
        for (const link of links) {
          // Another loopback address, same source port: a distinct TCP connection the kernel allows, with no certificate at all.
          const from = { plain: true, local: { address: "127.0.0.2", port: link.local } };
          const mint = await exchange(link.remote, request("POST", "/admin/v1/join-tokens", { service: "payments" }), from);
          if (mint.status === 200) won.push(`join token for ${String(mint.json?.identity)}`);
          const cert = await exchange(link.remote, request("POST", "/v1/certificates/renew", { namespace: "default", service: "orders", csr: attackerKeyCsr }), from);
          if (cert.status === 200) won.push(`certificate for ${String(cert.json?.spiffeId)}`);
        }
        expect({ obtainedWithoutCertificate: won }).toEqual({ obtainedWithoutCertificate: [] });
        expect(newIds(before, await tokenIds())).toEqual([]);
      } finally {
        for (const s of held) s.destroy();
      }
    },
  );

  test("--admin on a non-loopback address is refused, naming loopback (the admin API, plain HTTP with a bearer token, is never served off the host)", async () => {
    // 192.0.2.1 (TEST-NET-1) is on no interface here: nothing is bound off loopback either way; what matters is why it stops.
    const dir = join(tmp.path, "admin-off-loopback");
    const outcome = await startMesh(["control-plane", "--data-dir", join(dir, "data"), "--ca-dir", join(dir, "ca"), "--api", "127.0.0.1:0", "--bootstrap", "127.0.0.1:0", "--admin", "192.0.2.1:0"]).then(
      (p) => (p.proc.kill("SIGKILL"), "started"),
      (e: Error) => e.message.split("\n").filter((l) => l.startsWith("error:")).join(" "),
    );
    expect(outcome).toMatch(/loopback/);
  }, 20_000);
});

// ---------------------------------------------------------------------------------------
// 5. Client certificates on the mTLS API

describe("5. a certificate that is not a valid X.509-SVID of this trust domain gets no answer on the API port", () => {
  const leafOpts = (o: RootOptions): RootOptions => ({ uris: [ORDERS], ...o });
  const cases: [string, () => Promise<ClientCert>][] = [
    ["a chain where a workload leaf signed another leaf", async () => {
      const issuer = await makeLeaf(realIntermediate, leafOpts({}));
      const leaf = await makeLeaf(issuer, leafOpts({ trustDomain: TD }));
      return clientOf(leaf, issuer, realIntermediate);
    }],
    ["a leaf under a sub-CA of the intermediate (past its pathLen 0)", async () => {
      const sub = await makeIntermediate(realIntermediate, { uris: [`spiffe://${TD}`] });
      return clientOf(await makeLeaf(sub, leafOpts({})), sub, realIntermediate);
    }],
    ["a chain to another trust domain's CA", async () => {
      const root = await makeRoot({ trustDomain: "evil.example" });
      const int = await makeIntermediate(root);
      return clientOf(await makeLeaf(int, { uris: ["spiffe://evil.example/ns/default/sa/orders"] }), int, root);
    }],
    ["a rogue CA claiming this trust domain", async () => {
      const root = await makeRoot({ trustDomain: TD });
      const int = await makeIntermediate(root);
      return clientOf(await makeLeaf(int, leafOpts({})), int);
    }],
    ["a leaf from the real CA naming another trust domain", async () => clientOf(await makeLeaf(realIntermediate, { uris: ["spiffe://other.example/ns/default/sa/orders"] }), realIntermediate)],
    ["an expired leaf", async () => clientOf(await makeLeaf(realIntermediate, leafOpts({ notBefore: fromNow(-7200_000), notAfter: fromNow(-3600_000) })), realIntermediate)],
    ["a leaf not valid for an hour", async () => clientOf(await makeLeaf(realIntermediate, leafOpts({ notBefore: fromNow(3600_000), notAfter: fromNow(7200_000) })), realIntermediate)],
    ["a leaf with no URI SAN (identity only in CN and DNS)", async () => clientOf(await makeLeaf(realIntermediate, { subject: "CN=orders", uris: [], dns: ["orders.default.svc"] }), realIntermediate)],
    ["a leaf whose identity is only an email SAN", async () =>
      clientOf(await makeLeaf(realIntermediate, { subject: "CN=orders", uris: [], extensions: [new x509.SubjectAlternativeNameExtension([{ type: "email", value: "orders@mesh.local" }])] }), realIntermediate)],
    ["a leaf with two URI SANs", async () => clientOf(await makeLeaf(realIntermediate, { uris: [ORDERS, OPS] }), realIntermediate)],
    ["a leaf with a non-SPIFFE URI", async () => clientOf(await makeLeaf(realIntermediate, { uris: ["https://mesh.local/ns/default/sa/orders"] }), realIntermediate)],
    ["a leaf whose ID has '..'", async () => clientOf(await makeLeaf(realIntermediate, { uris: [`spiffe://${TD}/ns/default/sa/x/../../../mesh-system/sa/ops`] }), realIntermediate)],
    ["a leaf whose ID has a port", async () => clientOf(await makeLeaf(realIntermediate, { uris: [`spiffe://${TD}:443/ns/mesh-system/sa/ops`] }), realIntermediate)],
    ["a leaf whose ID has a query", async () => clientOf(await makeLeaf(realIntermediate, { uris: [`${OPS}?x=1`] }), realIntermediate)],
    ["a leaf whose ID is percent-encoded", async () => clientOf(await makeLeaf(realIntermediate, { uris: [`spiffe://${TD}/ns/mesh-system/sa/%6fps`] }), realIntermediate)],
    ["a leaf whose trust domain is upper-case", async () => clientOf(await makeLeaf(realIntermediate, { uris: ["spiffe://MESH.LOCAL/ns/mesh-system/sa/ops"] }), realIntermediate)],
    ["a leaf with CA=true", async () => clientOf(await makeLeaf(realIntermediate, leafOpts({ ca: true, keyUsages: ["digitalSignature", "keyCertSign"] })), realIntermediate)],
    ["a leaf for serverAuth only", async () => clientOf(await makeLeaf(realIntermediate, leafOpts({ eku: ["serverAuth"] })), realIntermediate)],
    ["a leaf for codeSigning only", async () => clientOf(await makeLeaf(realIntermediate, leafOpts({ eku: ["codeSigning"] })), realIntermediate)],
    ["a leaf with a broken signature", async () => {
      const leaf = await makeLeaf(realIntermediate, leafOpts({}));
      const der = new Uint8Array(leaf.x509.rawData).slice();
      der[der.length - 3] = der[der.length - 3]! ^ 0x01;
      return { cert: x509.PemConverter.encode(der.buffer, "CERTIFICATE") + "\n" + realIntermediate.pem, key: leaf.keyPem };
    }],
  ];

  test("control: a crafted, valid leaf from the real intermediate is answered", async () => {
    const a = await api(clientOf(await makeLeaf(realIntermediate, leafOpts({})), realIntermediate), "GET", "/v1/config?namespace=default&service=orders");
    expect(a.status).toBe(200);
  });

  for (const [name, make] of cases) {
    test(`refused: ${name}`, async () => {
      const client = await make();
      const a = await api(client, "GET", "/v1/config?namespace=default&service=orders");
      expect({ status: a.status ?? "none", body: a.body.slice(0, 100) }).toEqual({ status: "none", body: "" });
      // Nor with the admin routes.
      const b = await api(client, "POST", "/admin/v1/join-tokens", { service: "payments" });
      expect(b.status).toBeUndefined();
    });
  }

  test("refused: no client certificate, and plaintext HTTP", async () => {
    expect((await api(undefined, "GET", "/v1/config?namespace=default&service=orders")).status).toBeUndefined();
    const plain = await exchange(cp.ports.api, request("GET", "/v1/config?namespace=default&service=orders"), { plain: true, timeoutMs: 15_000 });
    expect(plain.status).toBeUndefined();
    expect(plain.body).toBe("");
    await stillServing();
  }, 20_000);
});

// ---------------------------------------------------------------------------------------
// 6. Resource abuse

interface Dribble {
  /** ms after the start when the server closed; -1 if still open when we gave up. */
  closedAfterMs: number;
  received: string;
}

/** Sends `first`, then `every` each 2 s until the server closes (or `maxMs` passes). */
function dribble(port: number, opts: { client?: ClientCert; plain?: boolean; tlsClient?: boolean; first: string | Buffer; every: string | Buffer; maxMs: number }): Promise<Dribble> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let received = "";
    let timer: Timer | undefined;
    let done = false;
    const socket = opts.plain
      ? net.connect({ host: "127.0.0.1", port })
      : tls.connect({ host: "127.0.0.1", port, ca: readFileSync(cp.bundle), checkServerIdentity: () => undefined, ...(opts.client ? { cert: opts.client.cert, key: opts.client.key } : {}) });
    const finish = (closedAfterMs: number) => {
      if (done) return;
      done = true;
      clearInterval(timer);
      clearTimeout(giveUp);
      socket.destroy();
      resolve({ closedAfterMs, received });
    };
    const giveUp = setTimeout(() => finish(-1), opts.maxMs);
    socket.once(opts.plain ? "connect" : "secureConnect", () => {
      socket.write(opts.first);
      timer = setInterval(() => socket.write(opts.every), 2_000);
    });
    socket.on("data", (d: Buffer) => void (received += d.toString("latin1")));
    socket.on("error", () => undefined);
    socket.on("close", () => finish(Math.round(performance.now() - t0)));
  });
}

/** Peak resident memory of a process, bytes. */
function peakRss(pid: number): number {
  return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024;
}

describe("6. resource abuse of the API and bootstrap ports is bounded", () => {
  test("a body declared past 4 MiB is refused at once with 400, on both ports", async () => {
    refused(await exchange(cp.ports.api, postHead("/v1/certificates/renew", 5 << 20) + "{", { client: orders }), 400, `at most ${MAX_BODY}`);
    refused(await exchange(cp.ports.bootstrap, postHead("/v1/bootstrap", 64 << 20) + "{"), 400, `at most ${MAX_BODY}`);
  });

  test(
    "a chunked body (no Content-Length) on the unauthenticated bootstrap port is refused once it passes the 4 MiB cap, " +
      "not read whole (api/http.ts body() counts what it reads)",
    async () => {
      const total = 24 << 20;
      const hwmBefore = peakRss(cp.proc.pid);
      const result = await new Promise<{ answer: Answer; sentBeforeAnswer: number }>((resolve) => {
        const socket = tls.connect({ host: "127.0.0.1", port: cp.ports.bootstrap, ca: readFileSync(cp.bundle), checkServerIdentity: () => undefined });
        const chunks: Buffer[] = [];
        let sent = 0;
        let sentBeforeAnswer = -1;
        const frame = (b: Buffer) => Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from("\r\n")]);
        socket.once("secureConnect", async () => {
          socket.write("POST /v1/bootstrap HTTP/1.1\r\nhost: mesh\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
          socket.write(frame(Buffer.from('{"token":"')));
          const piece = Buffer.alloc(64 << 10, "a");
          while (sent < total && sentBeforeAnswer < 0 && !socket.destroyed) {
            if (!socket.write(frame(piece))) await new Promise((r) => socket.once("drain", r));
            sent += piece.length;
            // Past the cap, paced: after answering, the server reads and drops what still comes
            // (as nginx's lingering close does), so an unpaced client on a loaded machine could
            // send it all before it sees the answer. 20 MiB at 64 KiB per 5 ms is 1.6 s of margin.
            if (sent > MAX_BODY) await Bun.sleep(5);
          }
          if (sentBeforeAnswer < 0 && !socket.destroyed) socket.write(Buffer.concat([frame(Buffer.from('","csr":"x"}')), Buffer.from("0\r\n\r\n")]));
        });
        socket.on("data", (d: Buffer) => {
          if (sentBeforeAnswer < 0) sentBeforeAnswer = sent;
          chunks.push(d);
        });
        socket.on("error", () => undefined);
        const timer = setTimeout(() => socket.destroy(), 30_000);
        socket.on("close", () => {
          clearTimeout(timer);
          resolve({ answer: parseAnswer(Buffer.concat(chunks).toString("latin1")), sentBeforeAnswer });
        });
      });
      const grewMiB = Math.round((peakRss(cp.proc.pid) - hwmBefore) / (1 << 20));
      const seen = { status: result.answer.status, error: String(result.answer.json?.error), bodyBytesTakenBeforeAnswer: result.sentBeforeAnswer, peakRssGrewMiB: grewMiB };
      // Safe: refused once past the cap (413, or 400 naming the cap), before the whole 24 MiB was taken.
      expect(seen.status === 413 || seen.error.includes(`at most ${MAX_BODY}`) ? "capped" : seen).toBe("capped");
      expect(seen.bodyBytesTakenBeforeAnswer).toBeLessThan(total);
      await stillServing();
    },
    40_000,
  );

  test("a flood of 300 silent connections and 100 concurrent junk bootstraps: every junk one gets a 4xx, and sidecars are still served", async () => {
    const silent = await Promise.all(
      Array.from({ length: 300 }, (_, i) => new Promise<net.Socket>((resolve) => {
        const s = net.connect({ host: "127.0.0.1", port: i % 2 ? cp.ports.api : cp.ports.bootstrap });
        s.on("error", () => undefined);
        s.once("connect", () => resolve(s));
        s.once("close", () => resolve(s));
      })),
    );
    try {
      const t0 = performance.now();
      const pem = await csr();
      const junk = await Promise.all(Array.from({ length: 100 }, (_, i) => bootstrap({ token: `junk.${i}.x`, csr: pem })));
      expect(junk.map((a) => a.status).filter((s) => s === undefined || s < 400 || s >= 500)).toEqual([]);
      const { token } = await mintToken("orders");
      expect((await bootstrap({ token, csr: await csr() })).status).toBe(200);
      expect((await renew(orders, await csr())).status).toBe(200);
      expect(performance.now() - t0).toBeLessThan(20_000);
    } finally {
      for (const s of silent) s.destroy();
    }
  }, 40_000);

  test("slowloris: a dribbled handshake, dribbled headers and a dribbled body are closed by timeouts (the API's slow body is checked last)", async () => {
    const clientHelloHead = Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00]);
    const results = await Promise.all([
      dribble(cp.ports.api, { plain: true, first: clientHelloHead, every: Buffer.from([0x01]), maxMs: 25_000 }),
      dribble(cp.ports.bootstrap, { plain: true, first: clientHelloHead, every: Buffer.from([0x01]), maxMs: 25_000 }),
      dribble(cp.ports.api, { client: orders, first: "POST /v1/certificates/renew HTTP/1.1\r\nhost: mesh\r\n", every: "x-a: b\r\n", maxMs: 25_000 }),
      dribble(cp.ports.bootstrap, { first: "POST /v1/bootstrap HTTP/1.1\r\nhost: mesh\r\n", every: "x-a: b\r\n", maxMs: 25_000 }),
      dribble(cp.ports.bootstrap, { first: postHead("/v1/bootstrap", 1000) + "{", every: " ", maxMs: 25_000 }),
      dribble(cp.ports.admin, { plain: true, first: "GET /v1/status HTTP/1.1\r\nhost: mesh\r\n", every: "x-a: b\r\n", maxMs: 25_000 }),
    ]);
    const names = ["api handshake", "bootstrap handshake", "api headers", "bootstrap headers", "bootstrap body", "admin headers"];
    const closed = Object.fromEntries(results.map((r, i) => [names[i], r.closedAfterMs >= 0 && r.closedAfterMs <= 20_000]));
    expect(closed).toEqual(Object.fromEntries(names.map((n) => [n, true])));
    for (const r of results) expect(r.received).not.toContain(" 200 ");
  }, 40_000);

  test("the API's slow body (started before the first test) was closed by the API's idle timeout, and no answer was ever a 5xx", async () => {
    const r = await slowApiBody;
    expect(r.closedAfterMs).toBeGreaterThan(0);
    expect(r.closedAfterMs).toBeLessThanOrEqual(75_000);
    expect(r.received).not.toContain(" 200 ");
    expect(serverErrors).toEqual([]);
    await stillServing();
  }, 90_000);
});
