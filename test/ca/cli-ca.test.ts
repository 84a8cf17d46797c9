import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { CLOCK_SKEW_MS } from "../../src/ca/profiles.ts";
import { readCertificates } from "../../src/pki/load.ts";
import { TrustBundle, verifyPeerChain } from "../../src/pki/verify.ts";
import { parseCertificates, x509 } from "../../src/pki/x509.ts";
import { makeRoot } from "../helpers/certs.ts";
import { mesh, tempDir } from "../helpers/cli.ts";

const MAIN = resolve(import.meta.dir, "../../src/main.ts");
const tmp = tempDir();
const ca = join(tmp.path, "ca");
afterAll(tmp.cleanup);

async function verifyIssued(dir: string, bundleFile = join(dir, "bundle.pem")) {
  const chain = readCertificates(readFileSync(join(dir, "chain.pem"), "utf8"), "chain.pem", "chain");
  return verifyPeerChain(chain, TrustBundle.fromPem(readFileSync(bundleFile, "utf8")));
}

beforeAll(async () => {
  const r = await mesh("ca", "init", "--trust-domain", "example.org", "--out", ca);
  expect(r.err).toBe("");
  expect(r.code).toBe(0);
});

describe("mesh ca init", () => {
  test("writes root, intermediate, keys 0600 and a bundle", () => {
    for (const f of ["root.pem", "root.key", "intermediate.pem", "intermediate.key", "bundle.pem"]) expect(existsSync(join(ca, f))).toBe(true);
    expect(statSync(join(ca, "root.key")).mode & 0o777).toBe(0o600);
    expect(statSync(join(ca, "intermediate.key")).mode & 0o777).toBe(0o600);
    expect(statSync(join(ca, "root.pem")).mode & 0o777).toBe(0o644);
  });

  test("root and intermediate are SPIFFE signing certificates", () => {
    for (const [file, ttlDays, pathLen] of [["root.pem", 3650, 1], ["intermediate.pem", 365, 0]] as const) {
      const cert = new x509.X509Certificate(readFileSync(join(ca, file), "utf8"));
      const bc = cert.getExtension(x509.BasicConstraintsExtension)!;
      expect(bc.ca).toBe(true);
      expect(bc.critical).toBe(true);
      expect(bc.pathLength).toBe(pathLen);
      const ku = cert.getExtension(x509.KeyUsagesExtension)!;
      expect(ku.usages & x509.KeyUsageFlags.keyCertSign).toBeTruthy();
      const san = cert.getExtension(x509.SubjectAlternativeNameExtension)!;
      expect(san.names.items.map((n) => `${n.type}:${n.value}`)).toEqual(["url:spiffe://example.org"]);
      const days = (cert.notAfter.getTime() - cert.notBefore.getTime()) / 86400_000;
      expect(Math.round(days)).toBe(ttlDays);
      expect((cert.publicKey.algorithm as EcKeyAlgorithm).namedCurve).toBe("P-256");
    }
  });

  test("root and intermediate start CLOCK_SKEW_MS in the past, as leaves do, so a lagging peer accepts them", () => {
    for (const file of ["root.pem", "intermediate.pem"]) {
      const cert = new x509.X509Certificate(readFileSync(join(ca, file), "utf8"));
      expect(cert.notBefore.getTime()).toBeLessThanOrEqual(Date.now() - CLOCK_SKEW_MS);
    }
  });

  test("directories init and issue create are 0700 when they hold a key and 0755 otherwise, whatever the umask", () => {
    for (const umask of ["000", "077"]) {
      const dir = join(tmp.path, `umask-${umask}`, "ca");
      for (const args of [["init", "--out", dir], ["issue", "--service", "web", "--ca-dir", dir]]) {
        const r = Bun.spawnSync(["sh", "-c", `umask ${umask} && exec "$0" "$@"`, process.execPath, MAIN, "ca", ...args], { stdout: "ignore", stderr: "pipe" });
        expect(`${r.exitCode} ${r.stderr.toString()}`).toBe("0 ");
      }
      const modes = [dirname(dir), dir, join(dir, "default"), join(dir, "default", "web")].map((d) => (statSync(d).mode & 0o777).toString(8));
      expect({ umask, modes }).toEqual({ umask, modes: ["755", "700", "755", "700"] });
    }
  });

  test("refuses to overwrite an existing CA without --force, and changes nothing", async () => {
    const before = readFileSync(join(ca, "root.key"), "utf8");
    const r = await mesh("ca", "init", "--trust-domain", "example.org", "--out", ca);
    expect(r.code).toBe(73);
    expect(r.err).toContain("already exists; pass --force");
    expect(r.err).toContain(join(ca, "root.pem"));
    expect(readFileSync(join(ca, "root.key"), "utf8")).toBe(before);
    expect(readdirSync(ca).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  test("rejects a malformed trust domain naming the flag", async () => {
    const r = await mesh("ca", "init", "--trust-domain", "Bad_Domain:443", "--out", join(tmp.path, "x"));
    expect(r.code).toBe(64);
    expect(r.err).toContain("--trust-domain");
    expect(existsSync(join(tmp.path, "x"))).toBe(false);
  });
});

describe("mesh ca issue", () => {
  test("issues an X.509-SVID with exactly the SPIFFE extensions", async () => {
    const out = join(tmp.path, "orders");
    const r = await mesh("ca", "issue", "--service", "orders", "--dns", "orders.default.svc", "--ca-dir", ca, "--out", out);
    expect(r.code).toBe(0);
    expect(r.out).toContain("spiffe://example.org/ns/default/sa/orders");
    expect(statSync(join(out, "key.pem")).mode & 0o777).toBe(0o600);
    const leaf = new x509.X509Certificate(readFileSync(join(out, "cert.pem"), "utf8"));
    const san = leaf.getExtension(x509.SubjectAlternativeNameExtension)!;
    const uris = san.names.items.filter((n) => n.type === "url").map((n) => n.value);
    expect(uris).toEqual(["spiffe://example.org/ns/default/sa/orders"]);
    expect(san.names.items.filter((n) => n.type === "dns").map((n) => n.value)).toEqual(["orders.default.svc"]);
    expect(leaf.getExtension(x509.BasicConstraintsExtension)!.ca).toBe(false);
    const ku = leaf.getExtension(x509.KeyUsagesExtension)!;
    expect(ku.critical).toBe(true);
    expect(ku.usages).toBe(x509.KeyUsageFlags.digitalSignature);
    expect(leaf.getExtension(x509.ExtendedKeyUsageExtension)!.usages.map(String).sort()).toEqual(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
    expect(leaf.getExtension(x509.SubjectKeyIdentifierExtension)).toBeTruthy();
    const aki = leaf.getExtension(x509.AuthorityKeyIdentifierExtension)!;
    const inter = new x509.X509Certificate(readFileSync(join(ca, "intermediate.pem"), "utf8"));
    expect(aki.keyId).toBe(inter.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);
    const hours = (leaf.notAfter.getTime() - Date.now()) / 3600_000;
    expect(hours).toBeGreaterThan(23.9);
    expect(hours).toBeLessThanOrEqual(24);
    const verdict = await verifyIssued(out);
    expect(verdict.ok ? verdict.spiffeId : verdict.reason).toBe("spiffe://example.org/ns/default/sa/orders");
  });

  test("defaults --out to <ca-dir>/<namespace>/<service>", async () => {
    const r = await mesh("ca", "issue", "--service", "billing", "--namespace", "shop", "--ca-dir", ca);
    expect(r.code).toBe(0);
    expect(existsSync(join(ca, "shop", "billing", "chain.pem"))).toBe(true);
  });

  test("refuses to overwrite an issued key without --force; --force replaces it", async () => {
    const out = join(tmp.path, "again");
    expect((await mesh("ca", "issue", "--service", "again", "--ca-dir", ca, "--out", out)).code).toBe(0);
    const key = readFileSync(join(out, "key.pem"), "utf8");
    const r = await mesh("ca", "issue", "--service", "again", "--ca-dir", ca, "--out", out);
    expect(r.code).toBe(73);
    expect(r.err).toContain(join(out, "key.pem"));
    expect(readFileSync(join(out, "key.pem"), "utf8")).toBe(key);
    expect((await mesh("ca", "issue", "--service", "again", "--ca-dir", ca, "--out", out, "--force")).code).toBe(0);
    expect(readFileSync(join(out, "key.pem"), "utf8")).not.toBe(key);
  });

  test.each([
    [["--service", "Orders!"], "--service"],
    [["--service", "orders", "--namespace", "a/b"], "--namespace"],
    [["--service", "orders", "--ttl", "forever"], "--ttl"],
    [["--service", "orders", "--ttl", "9000h"], "--ttl"],
    [["--service", "orders", "--dns", "Not A Name"], "--dns"],
  ])("bad input %p names %s and writes nothing", async (flags, where) => {
    const out = join(tmp.path, "bad");
    const r = await mesh("ca", "issue", ...flags, "--ca-dir", ca, "--out", out);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(where);
    expect(existsSync(out)).toBe(false);
  });

  test.each([["721h"], ["0"], ["forever"]])("--ttl %s is a usage error (exit 64) naming --ttl, out of range or malformed alike", async (ttl) => {
    const r = await mesh("ca", "issue", "--service", "orders", "--ttl", ttl, "--ca-dir", ca, "--out", join(tmp.path, "bad-ttl"));
    expect(r.code).toBe(64);
    expect(r.err).toStartWith("error: --ttl: ");
    expect(r.err).toContain("Usage");
  });

  test("a missing CA directory is named with the fix", async () => {
    const r = await mesh("ca", "issue", "--service", "orders", "--ca-dir", join(tmp.path, "nope"));
    expect(r.code).toBe(65);
    expect(r.err).toContain("mesh ca init");
  });

  test("a corrupt intermediate key is named", async () => {
    const broken = join(tmp.path, "broken");
    expect((await mesh("ca", "init", "--out", broken)).code).toBe(0);
    writeFileSync(join(broken, "intermediate.key"), "garbage");
    const r = await mesh("ca", "issue", "--service", "orders", "--ca-dir", broken);
    expect(r.code).toBe(65);
    expect(r.err).toContain(join(broken, "intermediate.key"));
  });

  test("an intermediate issued by another root is refused, naming intermediate.pem; `mesh ca rotate` repairs the CA", async () => {
    const mixed = join(tmp.path, "mixed");
    const other = join(tmp.path, "other-root");
    expect((await mesh("ca", "init", "--out", mixed)).code).toBe(0);
    expect((await mesh("ca", "init", "--out", other)).code).toBe(0);
    for (const f of ["intermediate.pem", "intermediate.key"]) writeFileSync(join(mixed, f), readFileSync(join(other, f)));
    const r = await mesh("ca", "issue", "--service", "orders", "--ca-dir", mixed);
    expect(r.code).toBe(65);
    expect(r.err).toContain(`${join(mixed, "intermediate.pem")}: intermediate certificate was not issued by ${join(mixed, "root.pem")}`);
    expect(existsSync(join(mixed, "default"))).toBe(false);
    expect((await mesh("ca", "rotate", "--ca-dir", mixed)).code).toBe(0);
    expect((await mesh("ca", "issue", "--service", "orders", "--ca-dir", mixed)).code).toBe(0);
    expect((await verifyIssued(join(mixed, "default", "orders"))).ok).toBe(true);
  });

  test("an intermediate of another trust domain is refused, naming the file and its trust domain", async () => {
    const mixed = join(tmp.path, "mixed-td");
    const partner = join(tmp.path, "partner");
    expect((await mesh("ca", "init", "--out", mixed)).code).toBe(0);
    expect((await mesh("ca", "init", "--trust-domain", "partner.test", "--out", partner)).code).toBe(0);
    for (const f of ["intermediate.pem", "intermediate.key"]) writeFileSync(join(mixed, f), readFileSync(join(partner, f)));
    const r = await mesh("ca", "bundle", "--ca-dir", mixed);
    expect(r.code).toBe(65);
    expect(r.err).toContain(`${join(mixed, "intermediate.pem")}: intermediate certificate is of trust domain "partner.test"`);
  });
});

describe("mesh ca inspect", () => {
  test("shows identity, issuer, validity and a valid verdict", async () => {
    const r = await mesh("ca", "inspect", join(tmp.path, "orders", "chain.pem"));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/Identity:\s+spiffe:\/\/example.org\/ns\/default\/sa\/orders/);
    expect(r.out).toMatch(/Issuer:\s+CN=mesh intermediate CA, O=example.org/);
    expect(r.out).toMatch(/Not after:.*\(23h 5\dm left\)/);
    expect(r.out).toMatch(/Chain:\s+valid against/);
  });

  test("explains a failing chain against another CA's bundle", async () => {
    const other = join(tmp.path, "other");
    expect((await mesh("ca", "init", "--trust-domain", "other.org", "--out", other)).code).toBe(0);
    const r = await mesh("ca", "inspect", join(tmp.path, "orders", "chain.pem"), "--bundle", join(other, "bundle.pem"));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/Chain:\s+INVALID \(wrong_trust_domain\)/);
  });

  test("inspects a CA certificate", async () => {
    const r = await mesh("ca", "inspect", join(ca, "intermediate.pem"), "--ca-dir", ca);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/Kind:\s+CA certificate/);
    expect(r.out).toMatch(/Identity:\s+trust domain example.org\n/);
    expect(r.out).toMatch(/Chain:\s+trusted/);
  });

  test("a bundle whose root has no SPIFFE ID, or is cut short, is refused naming the bundle file", async () => {
    const plain = join(tmp.path, "plain-root.pem");
    writeFileSync(plain, (await makeRoot({ uris: [] })).pem);
    const cut = join(tmp.path, "cut-bundle.pem");
    writeFileSync(cut, readFileSync(join(ca, "bundle.pem"), "utf8").split("\n").slice(0, 4).join("\n"));
    for (const bundle of [plain, cut]) {
      const r = await mesh("ca", "inspect", join(tmp.path, "orders", "chain.pem"), "--bundle", bundle);
      expect(`${r.code} ${r.err}`).toStartWith(`65 error: ${bundle}: `);
    }
  });

  test("a file that is not a certificate is named", async () => {
    const junk = join(tmp.path, "junk.pem");
    writeFileSync(junk, "hello");
    const r = await mesh("ca", "inspect", junk);
    expect(r.code).toBe(65);
    expect(r.err).toContain(junk);
    const dir = await mesh("ca", "inspect", tmp.path);
    expect(dir.err).toContain("not a regular file");
  });
});

describe("mesh ca rotate and bundle", () => {
  test("a new intermediate keeps old leaves valid and signs new ones", async () => {
    const dir = join(tmp.path, "rot");
    expect((await mesh("ca", "init", "--out", dir)).code).toBe(0);
    expect((await mesh("ca", "issue", "--service", "a", "--ca-dir", dir)).code).toBe(0);
    const before = readFileSync(join(dir, "intermediate.pem"), "utf8");
    expect((await mesh("ca", "rotate", "--ca-dir", dir)).code).toBe(0);
    expect(readFileSync(join(dir, "intermediate.pem"), "utf8")).not.toBe(before);
    expect(readdirSync(join(dir, "retired")).some((f) => f.startsWith("intermediate-"))).toBe(true);
    expect((await mesh("ca", "issue", "--service", "b", "--ca-dir", dir)).code).toBe(0);
    expect((await verifyIssued(join(dir, "default", "a"), join(dir, "bundle.pem"))).ok).toBe(true);
    expect((await verifyIssued(join(dir, "default", "b"), join(dir, "bundle.pem"))).ok).toBe(true);
  });

  test("a root rotation trusts old and new during the overlap, then only the new", async () => {
    const dir = join(tmp.path, "rootrot");
    expect((await mesh("ca", "init", "--out", dir)).code).toBe(0);
    expect((await mesh("ca", "issue", "--service", "old", "--ca-dir", dir)).code).toBe(0);
    const r = await mesh("ca", "rotate", "--root", "--ca-dir", dir);
    expect(r.code).toBe(0);
    expect(r.out).toContain("2 roots");
    expect((await mesh("ca", "issue", "--service", "new", "--ca-dir", dir)).code).toBe(0);
    const bundle = join(dir, "bundle.pem");
    expect(parseCertificates(readFileSync(bundle, "utf8")).length).toBe(2);
    expect((await verifyIssued(join(dir, "default", "old"), bundle)).ok).toBe(true);
    expect((await verifyIssued(join(dir, "default", "new"), bundle)).ok).toBe(true);
    const printed = await mesh("ca", "bundle", "--ca-dir", dir);
    expect(parseCertificates(printed.out).length).toBe(2);

    // Unforced, --complete asks a control plane first; none answers, so nothing is written.
    const tokenFile = join(tmp.path, "admin-token");
    writeFileSync(tokenFile, "x");
    const unasked = await mesh("ca", "rotate", "--complete", "--ca-dir", dir, "--admin-url", "http://127.0.0.1:1", "--admin-token-file", tokenFile);
    expect({ code: unasked.code, roots: parseCertificates(readFileSync(bundle, "utf8")).length }).toEqual({ code: 1, roots: 2 });
    expect(unasked.err).toContain("cannot ask a control plane whether every sidecar is on the current root: cannot reach the control plane at http://127.0.0.1:1");
    expect(unasked.err).toContain("--force completes without asking");
    expect((await mesh("ca", "rotate", "--root", "--force", "--ca-dir", dir)).code).toBe(64);

    expect((await mesh("ca", "rotate", "--complete", "--ca-dir", dir, "--force")).code).toBe(0);
    expect(parseCertificates(readFileSync(bundle, "utf8")).length).toBe(1);
    const old = await verifyIssued(join(dir, "default", "old"), bundle);
    expect(old.ok ? "ok" : old.reason).toBe("unknown_issuer");
    expect((await verifyIssued(join(dir, "default", "new"), bundle)).ok).toBe(true);
    const again = await mesh("ca", "rotate", "--complete", "--ca-dir", dir);
    expect(again.code).toBe(65);
  });
});
