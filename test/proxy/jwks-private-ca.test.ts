/**
 * A jwksUri behind a private CA (an identity provider inside the company, Keycloak with an
 * internal certificate): `jwksCaBundle` holds that CA's certificates, and the sidecar
 * verifies the key server with them alone. The CA and the server's certificate are made by
 * openssl; without the bundle, or with another CA's, the keys are never fetched and the
 * token is refused. The schema refuses a bundle that is not certificates, holds a private
 * key, or has no https jwksUri to verify.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import "../../src/config/kinds/index.ts";
import { parseManifest } from "../../src/config/manifest.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";

const fx = fixtureFor("orders", "payments", "ledger", "billing");
const ISSUER = "https://id.internal.example";

let keys: Awaited<ReturnType<typeof generateKeyPair>>;
let jwksServer: ReturnType<typeof Bun.serve>;
let fetches = 0;
let ports: { outbound: number; payments: number; ledger: number; billing: number };
const pem = { ca: "", otherCa: "" };

/** Runs openssl in `dir`; its output is not wanted, only the files. */
function openssl(dir: string, ...args: string[]): void {
  const r = Bun.spawnSync(["openssl", ...args], { cwd: dir, stdout: "ignore", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl ${args[0]}: ${r.stderr.toString()}`);
}

/** A CA, and (with `server`) a certificate it issues for 127.0.0.1. */
function makeCa(dir: string, name: string, server: boolean): void {
  openssl(dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}-ca.key`, "-out", `${name}-ca.pem`, "-days", "2", "-subj", `/CN=${name} test CA`);
  if (!server) return;
  openssl(dir, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}-srv.key`, "-out", `${name}-srv.csr`, "-subj", "/CN=127.0.0.1");
  writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1\n");
  openssl(dir, "x509", "-req", "-in", `${name}-srv.csr`, "-CA", `${name}-ca.pem`, "-CAkey", `${name}-ca.key`, "-CAcreateserial", "-out", `${name}-srv.pem`, "-days", "2", "-extfile", "san.ext");
}

const rule = (bundle?: string) => ({ issuer: ISSUER, audiences: ["shop"], jwksUri: `https://127.0.0.1:${jwksServer.port}/keys`, ...(bundle !== undefined && { jwksCaBundle: bundle }) });
const policies = (service: string, bundle?: string) =>
  `---\napiVersion: mesh.dev/v1alpha1\nkind: RequestAuthentication\nmetadata: { name: users }\nspec:\n  service: ${service}\n  jwtRules: ${JSON.stringify([rule(bundle)])}\n`;

beforeAll(async () => {
  const dir = fx.tmp.path;
  makeCa(dir, "idp", true);
  makeCa(dir, "other", false);
  pem.ca = readFileSync(join(dir, "idp-ca.pem"), "utf8");
  pem.otherCa = readFileSync(join(dir, "other-ca.pem"), "utf8");
  keys = await generateKeyPair("ES256");
  const jwk = { ...(await exportJWK(keys.publicKey)), kid: "k1", alg: "ES256", use: "sig" };
  jwksServer = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: Bun.file(join(dir, "idp-srv.pem")), key: Bun.file(join(dir, "idp-srv.key")) },
    fetch: () => {
      fetches++;
      return Response.json({ keys: [jwk] });
    },
  });
  const echo = fx.echo("svc").url;
  const payments = await fx.proxy("payments", echo, fx.config("payments", {}, policies("payments", pem.ca)));
  const ledger = await fx.proxy("ledger", echo, fx.config("ledger", {}, policies("ledger")));
  const billing = await fx.proxy("billing", echo, fx.config("billing", {}, policies("billing", pem.otherCa)));
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound], ledger: [ledger.ports.inbound], billing: [billing.ports.inbound] }));
  ports = { outbound: orders.ports.outbound, payments: payments.ports.admin, ledger: ledger.ports.admin, billing: billing.ports.admin };
});
afterAll(() => jwksServer?.stop(true));

const token = () => new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(ISSUER).setSubject("alice").setAudience("shop").setExpirationTime("5m").sign(keys.privateKey);

async function call(host: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${ports.outbound}/v1/me`, { headers: { host, authorization: `Bearer ${await token()}` } });
  await res.arrayBuffer();
  return res.status;
}

describe("a jwksUri behind a private CA", () => {
  test("with the CA's bundle, the keys are fetched and the token verified", async () => {
    expect(await call("payments")).toBe(200);
    expect(fetches).toBeGreaterThanOrEqual(1);
  });

  test("without a bundle (the runtime's roots), or with another CA's, the server is not trusted: 401, and the failed fetch is counted", async () => {
    const before = fetches;
    expect(await call("ledger")).toBe(401);
    expect(await call("billing")).toBe(401);
    expect(fetches).toBe(before);
    expect(await metricValue(ports.ledger, "mesh_authentication_key_fetch_failures_total")).toBeGreaterThanOrEqual(1);
    expect(await metricValue(ports.billing, "mesh_authentication_key_fetch_failures_total")).toBeGreaterThanOrEqual(1);
  });
});

describe("schema", () => {
  const issues = (jwtRule: Record<string, unknown>) => {
    const r = parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind: "RequestAuthentication", metadata: { name: "p" }, spec: { service: "payments", jwtRules: [jwtRule] } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };

  test("a bundle must be certificates, hold no private key, and verify an https:// jwksUri", () => {
    const https = { issuer: ISSUER, jwksUri: "https://id.internal.example/keys" };
    expect(issues({ ...https, jwksCaBundle: pem.ca })).toEqual([]);
    expect(issues({ ...https, jwksCaBundle: "not pem" })).toEqual(["spec.jwtRules[0].jwksCaBundle: no CERTIFICATE block found in CA bundle"]);
    expect(issues({ ...https, jwksCaBundle: `${pem.ca}${readFileSync(join(fx.tmp.path, "idp-ca.key"), "utf8")}` })).toEqual([
      "spec.jwtRules[0].jwksCaBundle: holds a private key: give only the CA's certificates",
    ]);
    expect(issues({ issuer: ISSUER, jwksUri: "http://127.0.0.1:1/keys", jwksCaBundle: pem.ca })).toEqual([
      "spec.jwtRules[0].jwksCaBundle: verifies the server of an https:// jwksUri; this rule has none",
    ]);
    expect(issues({ issuer: ISSUER, jwks: { keys: [] }, jwksCaBundle: pem.ca })).toContain("spec.jwtRules[0].jwksCaBundle: verifies the server of an https:// jwksUri; this rule has none");
  });
});
