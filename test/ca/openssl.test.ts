/** The real openssl must accept what mesh issues, and see the SPIFFE extensions. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";

const tmp = tempDir();
const ca = join(tmp.path, "ca");
const leafDir = join(tmp.path, "orders");
afterAll(tmp.cleanup);

function openssl(...args: string[]) {
  const p = Bun.spawnSync(["openssl", ...args], { stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString() + p.stderr.toString() };
}

beforeAll(async () => {
  expect((await mesh("ca", "init", "--trust-domain", "mesh.local", "--out", ca)).code).toBe(0);
  expect((await mesh("ca", "issue", "--service", "orders", "--ca-dir", ca, "--out", leafDir)).code).toBe(0);
});

test("openssl verify accepts the leaf through the intermediate to the root, strictly, for client and server use", () => {
  for (const purpose of ["sslclient", "sslserver"]) {
    const r = openssl("verify", "-x509_strict", "-purpose", purpose, "-CAfile", join(ca, "root.pem"), "-untrusted", join(ca, "intermediate.pem"), join(leafDir, "cert.pem"));
    expect(r.out).toContain(": OK");
    expect(r.code).toBe(0);
  }
});

test("openssl rejects the leaf against another CA's root", async () => {
  const other = join(tmp.path, "other");
  expect((await mesh("ca", "init", "--out", other)).code).toBe(0);
  const r = openssl("verify", "-CAfile", join(other, "root.pem"), "-untrusted", join(ca, "intermediate.pem"), join(leafDir, "cert.pem"));
  expect(r.code).not.toBe(0);
});

test("openssl x509 -text shows exactly one URI SAN and the SVID extensions", () => {
  const text = openssl("x509", "-noout", "-text", "-in", join(leafDir, "cert.pem")).out;
  expect(text.match(/URI:/g)?.length).toBe(1);
  expect(text).toContain("URI:spiffe://mesh.local/ns/default/sa/orders");
  expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
  expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
  expect(text).toMatch(/X509v3 Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/);
  expect(text).toContain("X509v3 Subject Key Identifier");
  expect(text).toContain("X509v3 Authority Key Identifier");
  expect(text).toContain("ASN1 OID: prime256v1");
});

test("openssl sees the CA certificates as SPIFFE signing certificates", () => {
  for (const file of ["root.pem", "intermediate.pem"]) {
    const text = openssl("x509", "-noout", "-text", "-in", join(ca, file)).out;
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(text).toContain("URI:spiffe://mesh.local\n");
  }
});

test("openssl reads the private key written by mesh", () => {
  expect(openssl("pkey", "-noout", "-in", join(leafDir, "key.pem")).code).toBe(0);
});
