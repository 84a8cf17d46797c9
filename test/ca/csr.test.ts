import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPair, EC_SIGN_ALG, parseCertificates, x509 } from "../../src/pki/x509.ts";
import { mesh, tempDir } from "../helpers/cli.ts";

const tmp = tempDir();
const ca = join(tmp.path, "ca");
const ID = "spiffe://mesh.local/ns/default/sa/orders";
afterAll(tmp.cleanup);
beforeAll(async () => expect((await mesh("ca", "init", "--out", ca)).code).toBe(0));

async function csrFile(name: string, opts: { cn?: string; sans?: x509.JsonGeneralNames; extensions?: x509.Extension[]; tamper?: boolean } = {}) {
  const keys = await generateKeyPair();
  const extensions = [...(opts.extensions ?? [])];
  if (opts.sans) extensions.push(new x509.SubjectAlternativeNameExtension(opts.sans));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${opts.cn ?? "orders"}`,
    keys,
    signingAlgorithm: EC_SIGN_ALG,
    extensions,
  });
  let der = new Uint8Array(csr.rawData);
  if (opts.tamper) {
    der = der.slice();
    der[der.length - 5] = der[der.length - 5]! ^ 0xff; // flip a byte inside the signature
  }
  const path = join(tmp.path, `${name}.csr`);
  writeFileSync(path, x509.PemConverter.encode(der.buffer as ArrayBuffer, "CERTIFICATE REQUEST"));
  return path;
}

async function sign(csr: string, ...flags: string[]) {
  return mesh("ca", "sign", "--csr", csr, "--service", "orders", "--ca-dir", ca, ...flags);
}

describe("mesh ca sign", () => {
  test("signs a CSR that asks for exactly the granted identity", async () => {
    const out = join(tmp.path, "signed");
    const r = await sign(await csrFile("good", { sans: [{ type: "url", value: ID }] }), "--out", out);
    expect(r.code).toBe(0);
    const [leaf] = parseCertificates(readFileSync(join(out, "chain.pem"), "utf8"));
    const names = leaf!.getExtension(x509.SubjectAlternativeNameExtension)!.names.items.map((n) => `${n.type}:${n.value}`);
    expect(names).toEqual([`url:${ID}`]);
    expect(existsSync(join(out, "key.pem"))).toBe(false); // the key never left its owner
  });

  test("prints the chain when no --out is given; the SAN is added when the CSR has none", async () => {
    const r = await sign(await csrFile("nosan"));
    expect(r.code).toBe(0);
    const chain = parseCertificates(r.out);
    expect(chain.length).toBe(2);
    expect(chain[0]!.getExtension(x509.SubjectAlternativeNameExtension)!.names.items[0]!.value).toBe(ID);
  });

  test("allows a DNS SAN only when granted with --dns", async () => {
    const csr = await csrFile("dns", { sans: [{ type: "url", value: ID }, { type: "dns", value: "orders.svc" }] });
    const denied = await sign(csr);
    expect(denied.code).toBe(65);
    expect(denied.err).toContain("dns:orders.svc");
    expect((await sign(csr, "--dns", "orders.svc")).code).toBe(0);
  });

  test.each([
    ["another identity", { sans: [{ type: "url", value: "spiffe://mesh.local/ns/default/sa/payments" }] }, "url:spiffe://mesh.local/ns/default/sa/payments"],
    ["an extra URI SAN", { sans: [{ type: "url", value: ID }, { type: "url", value: "spiffe://mesh.local/ns/default/sa/admin" }] }, "is not granted"],
    ["an email SAN", { sans: [{ type: "email", value: "a@b.c" }] }, "email:a@b.c"],
    ["an IP SAN", { sans: [{ type: "ip", value: "10.0.0.1" }] }, "ip:10.0.0.1"],
    ["CA=true", { extensions: [new x509.BasicConstraintsExtension(true, undefined, true)] }, "CA=true"],
    ["keyCertSign", { extensions: [new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign)] }, "keyCertSign"],
    ["codeSigning", { extensions: [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.codeSigning])] }, "extended key usage"],
    ["another CN", { cn: "payments" }, "subject CN"],
    ["a bad signature", { tamper: true }, "signature does not verify"],
  ] as const)("refuses a CSR with %s", async (name, opts, message) => {
    const out = join(tmp.path, `refused-${name.replace(/\W+/g, "-")}`);
    const r = await sign(await csrFile(name.replace(/\W+/g, "-"), opts as never), "--out", out);
    expect(r.code).toBe(65);
    expect(r.err).toContain(message);
    expect(r.err).toContain(".csr");
    expect(existsSync(out)).toBe(false);
  });

  test("refuses a TTL beyond the cap", async () => {
    const r = await sign(await csrFile("ttl"), "--ttl", "800h");
    expect(r.code).not.toBe(0);
    expect(r.err).toContain("--ttl");
  });

  test("refuses a file that is not a CSR, naming it", async () => {
    const path = join(tmp.path, "junk.csr");
    writeFileSync(path, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n");
    const r = await sign(path);
    expect(r.code).toBe(65);
    expect(r.err).toContain(path);
  });

  test("signs a CSR made by openssl", async () => {
    const key = join(tmp.path, "ossl.key");
    const csr = join(tmp.path, "ossl.csr");
    const proc = Bun.spawnSync(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", key, "-out", csr, "-subj", "/CN=orders", "-addext", `subjectAltName=URI:${ID}`]);
    expect(proc.exitCode).toBe(0);
    expect((await sign(csr)).code).toBe(0);
    const rsa = join(tmp.path, "rsa.csr");
    Bun.spawnSync(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", join(tmp.path, "rsa.key"), "-out", rsa, "-subj", "/CN=orders"]);
    const refused = await sign(rsa);
    expect(refused.code).toBe(65);
    expect(refused.err).toContain("RSASSA");
  });
});
