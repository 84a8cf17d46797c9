/**
 * The control plane's audit trail, against a real control plane: every certificate it
 * signs and every signing request it refuses is one `audit` line in its log, naming the
 * identity, the serial, the client's address and the join token by id; join tokens
 * minted and revoked and manifests changed are lines too, naming the admin; /v1/status
 * and `mesh check` count what was signed and refused. No token text is ever logged.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";
import { serviceManifest, startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { stopAll } from "../helpers/procs.ts";
import { eventually } from "../helpers/wait.ts";
import { makeCsr } from "../../src/proxy/control/csr.ts";
import { exportPrivateKeyPem, generateKeyPair } from "../../src/pki/keys.ts";
import { Certificate } from "../../src/pki/certificate.ts";
import { decodePem } from "../../src/pki/pem.ts";

const TD = "mesh.local";
const ORDERS = `spiffe://${TD}/ns/default/sa/orders`;

const tmp = tempDir("mesh-audit-");
let cp: TestControlPlane;
let bundle: string;

beforeAll(async () => {
  cp = await startControlPlane(tmp.path);
  bundle = readFileSync(cp.bundle, "utf8");
});

afterAll(async () => {
  await stopAll();
  tmp.cleanup();
});

type AuditLine = Record<string, unknown> & { audit: string };

/** The control plane's audit lines so far. */
function auditLines(): AuditLine[] {
  return cp
    .stderr()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r): r is AuditLine => typeof r.audit === "string");
}

async function mintToken(service: string): Promise<{ token: string; id: string }> {
  const res = await cp.admin("POST", "/v1/join-tokens", { service });
  expect(res.status).toBe(200);
  return (await res.json()) as { token: string; id: string };
}

interface Signed {
  chain: string;
  serial: string;
  spiffeId: string;
}

async function bootstrap(token: string, service: string): Promise<{ status: number; signed?: Signed; keyPem: string }> {
  const keys = await generateKeyPair();
  const res = await fetch(`https://127.0.0.1:${cp.ports.bootstrap}/v1/bootstrap`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token, csr: await makeCsr(keys, `spiffe://${TD}/ns/default/sa/${service}`, service) }),
    tls: { ca: bundle, checkServerIdentity: () => undefined },
  });
  const body = (await res.json()) as Signed;
  return { status: res.status, signed: res.status === 200 ? body : undefined, keyPem: await exportPrivateKeyPem(keys.privateKey) };
}

async function renew(client: { chain: string; keyPem: string }, service: string): Promise<{ status: number; signed?: Signed }> {
  const keys = await generateKeyPair();
  const res = await fetch(`https://127.0.0.1:${cp.ports.api}/v1/certificates/renew`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ namespace: "default", service, csr: await makeCsr(keys, `spiffe://${TD}/ns/default/sa/${service}`, service) }),
    tls: { ca: bundle, cert: client.chain, key: client.keyPem, checkServerIdentity: () => undefined },
  });
  const body = (await res.json()) as Signed;
  return { status: res.status, signed: res.status === 200 ? body : undefined };
}

function leafSerial(chainPem: string): string {
  const leaf = decodePem(chainPem).find((b) => b.type === "CERTIFICATE")!;
  return Certificate.fromDer(leaf.der).serialNumber;
}

test("certificates signed and refused, tokens minted and revoked, manifests changed: each an audit line; status and check count them", async () => {
  const minted = await mintToken("orders");
  const first = await bootstrap(minted.token, "orders");
  expect(first.status).toBe(200);
  const signed = first.signed!;
  // The serial the line names is the certificate's own.
  expect(signed.serial).toBe(leafSerial(signed.chain));

  // The same single-use token again, a token that is no token, a CSR for another service.
  expect((await bootstrap(minted.token, "orders")).status).toBe(401);
  expect((await bootstrap("not-a-token", "orders")).status).toBe(401);
  const other = await mintToken("orders");
  expect((await bootstrap(other.token, "payments")).status).toBe(400);

  // Renewal: its own identity is signed; another's is refused.
  const client = { chain: signed.chain, keyPem: first.keyPem };
  const renewed = await renew(client, "orders");
  expect(renewed.status).toBe(200);
  expect((await renew(client, "payments")).status).toBe(403);

  const revoked = await cp.admin("DELETE", `/v1/join-tokens/${other.id}`);
  expect(revoked.status).toBe(200);
  await cp.apply(serviceManifest("orders"));

  await eventually(() => auditLines().length >= 10, 5000);
  const lines = auditLines();
  const of = (audit: string) => lines.filter((l) => l.audit === audit);

  expect(of("join-token-minted").map((l) => [l.tokenId, l.spiffeId, l.by, l.uses])).toEqual([
    [minted.id, ORDERS, "admin token", 1],
    [other.id, ORDERS, "admin token", 1],
  ]);
  expect(of("join-token-revoked").map((l) => [l.tokenId, l.by])).toEqual([[other.id, "admin token"]]);
  expect(of("manifests-changed").map((l) => [l.changes, l.by])).toEqual([[["Service default/orders created"], "admin token"]]);

  const issued = of("certificate-issued");
  expect(issued.map((l) => [l.via, l.spiffeId, l.serial, l.notAfter, l.tokenId])).toEqual([
    ["bootstrap", ORDERS, signed.serial, (signed as unknown as { notAfter: string }).notAfter, minted.id],
    ["renewal", ORDERS, renewed.signed!.serial, (renewed.signed as unknown as { notAfter: string }).notAfter, undefined],
  ]);
  for (const l of issued) expect(String(l.peer)).toMatch(/^127\.0\.0\.1:\d+$/);
  expect(issued[0]!.level).toBe(30);

  const refusals = of("certificate-refused");
  expect(refusals.map((l) => [l.via, l.claimed, l.tokenId])).toEqual([
    ["bootstrap", ORDERS, minted.id],
    ["bootstrap", undefined, undefined],
    ["bootstrap", ORDERS, other.id],
    ["renewal", ORDERS, undefined],
  ]);
  expect(refusals.map((l) => l.reason)).toEqual([
    "token was already used",
    "not a JWT",
    'csr: subject CN "payments" is not the granted service "orders"',
    `${ORDERS} may not act for service default/payments`,
  ]);
  for (const l of refusals) {
    expect(String(l.peer)).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(l.level).toBe(40);
  }

  // Tokens are named by id only: no token's text is anywhere in the log.
  expect(cp.stderr()).not.toContain(minted.token);
  expect(cp.stderr()).not.toContain(other.token);

  const status = (await (await cp.admin("GET", "/v1/status")).json()) as { certificates: unknown };
  expect(status.certificates).toEqual({ issued: { bootstrap: 1, renewal: 1 }, refused: { bootstrap: 3, renewal: 1 } });

  const tokenFile = join(tmp.path, "admin-token");
  writeFileSync(tokenFile, cp.adminToken);
  const check = await mesh("check", "--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", tokenFile);
  expect(check.out).toContain("PASS  certificates since start: 1 first (join token), 1 renewed; 4 requests refused");
});

test("a refusal's reason is cut short: a client cannot have the log carry its whole request", async () => {
  const before = auditLines().length;
  const { token } = await mintToken("orders");
  const keys = await generateKeyPair();
  const longName = `${"a".repeat(60)}.`.repeat(60);
  const res = await fetch(`https://127.0.0.1:${cp.ports.bootstrap}/v1/bootstrap`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token, csr: await makeCsr(keys, `spiffe://${TD}/ns/default/sa/${longName}`, "orders") }),
    tls: { ca: bundle, checkServerIdentity: () => undefined },
  });
  expect(res.status).toBe(400);
  await eventually(() => auditLines().some((l, i) => i >= before && l.audit === "certificate-refused"), 5000);
  const refusal = auditLines().slice(before).find((l) => l.audit === "certificate-refused")!;
  expect(String(refusal.reason)).toEndWith("…");
  expect(String(refusal.reason).length).toBe(301);
});
