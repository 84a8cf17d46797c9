/**
 * The etcd client's TLS files are checked for what they hold when read, so a wrong file is
 * named at start rather than read later as an etcd member that does not answer. The keys
 * and certificates are made by openssl, in the encodings etcd's own tooling writes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { etcdClientKeyMatches, etcdTlsFileProblem } from "../../src/store/etcd-tls.ts";
import { tempDir } from "../helpers/cli.ts";

const tmp = tempDir("mesh-etcd-tls-files-");
afterAll(() => tmp.cleanup());

function openssl(...args: string[]): void {
  const r = Bun.spawnSync(["openssl", ...args], { cwd: tmp.path, stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr.toString()}`);
}
const read = (name: string) => readFileSync(join(tmp.path, name), "utf8");

/** A self-signed certificate for `key` (a PEM file in tmp), written to `out`. */
const selfSigned = (key: string, out: string) => openssl("req", "-x509", "-key", key, "-subj", "/CN=etcd-client", "-days", "1", "-out", out);

const files: Record<string, string> = {};
beforeAll(() => {
  openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec-pkcs8.pem");
  openssl("ec", "-in", "ec-pkcs8.pem", "-out", "ec-sec1.pem");
  openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa-pkcs8.pem");
  openssl("rsa", "-in", "rsa-pkcs8.pem", "-traditional", "-out", "rsa-pkcs1.pem");
  openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "other.pem");
  selfSigned("ec-pkcs8.pem", "ec-cert.pem");
  selfSigned("rsa-pkcs8.pem", "rsa-cert.pem");
  for (const name of ["ec-pkcs8.pem", "ec-sec1.pem", "rsa-pkcs8.pem", "rsa-pkcs1.pem", "other.pem", "ec-cert.pem", "rsa-cert.pem"]) files[name] = read(name);
});

describe("etcdTlsFileProblem", () => {
  test.each(["ec-pkcs8.pem", "ec-sec1.pem", "rsa-pkcs8.pem", "rsa-pkcs1.pem"])("a key in %s is taken as --etcd-key", (name) => {
    expect(etcdTlsFileProblem("key", files[name]!)).toBeUndefined();
  });

  test("certificates are taken as --etcd-cert and, two of them, as --etcd-ca", () => {
    expect(etcdTlsFileProblem("cert", files["ec-cert.pem"]!)).toBeUndefined();
    expect(etcdTlsFileProblem("ca", files["ec-cert.pem"]! + files["rsa-cert.pem"]!)).toBeUndefined();
  });

  test("a key given as --etcd-ca is refused naming its block and line: the bundle is not secret", () => {
    const text = files["ec-cert.pem"]! + files["ec-pkcs8.pem"]!;
    const line = text.split("\n").findIndex((l) => l === "-----BEGIN PRIVATE KEY-----") + 1;
    expect(etcdTlsFileProblem("ca", text)).toBe(`holds a private key ("PRIVATE KEY" block at line ${line}); expected only CA certificates`);
  });

  test("a certificate given as --etcd-key, and a key as --etcd-cert, say what they hold instead", () => {
    expect(etcdTlsFileProblem("key", files["ec-cert.pem"]!)).toBe('holds only a "CERTIFICATE" block; expected a private key');
    expect(etcdTlsFileProblem("cert", files["ec-sec1.pem"]!)).toBe('holds only a "EC PRIVATE KEY" block; expected a client certificate');
  });

  test("a file with no PEM in it, and a cut PEM block, are named as such", () => {
    expect(etcdTlsFileProblem("ca", "just text\n")).toBe("holds no PEM block; expected CA certificates");
    const cut = files["ec-cert.pem"]!.split("\n").slice(0, 4).join("\n");
    expect(etcdTlsFileProblem("cert", cut)).toStartWith("is not valid PEM: ");
  });

  test("a CERTIFICATE block whose DER is not a certificate is named by its number and line", () => {
    const junk = `-----BEGIN CERTIFICATE-----\n${Buffer.from("not a certificate at all").toString("base64")}\n-----END CERTIFICATE-----\n`;
    const lines = files["ec-cert.pem"]!.trimEnd().split("\n").length;
    expect(etcdTlsFileProblem("ca", files["ec-cert.pem"]! + junk)).toBe(`certificate #2 (the block at line ${lines + 1}) is not a valid X.509 certificate`);
  });

  test("a PRIVATE KEY block whose DER is not a key is refused with the reason it cannot be read", () => {
    const junk = `-----BEGIN PRIVATE KEY-----\n${Buffer.from("not a key").toString("base64")}\n-----END PRIVATE KEY-----\n`;
    expect(etcdTlsFileProblem("key", junk)).toStartWith("private key cannot be read: ");
  });
});

describe("etcdClientKeyMatches", () => {
  test.each([["ec-cert.pem", "ec-pkcs8.pem"], ["ec-cert.pem", "ec-sec1.pem"], ["rsa-cert.pem", "rsa-pkcs1.pem"]])("%s with its own key %s matches", (cert, key) => {
    expect(etcdClientKeyMatches(files[cert]!, files[key]!)).toBe(true);
  });

  test.each([["ec-cert.pem", "other.pem"], ["ec-cert.pem", "rsa-pkcs8.pem"], ["rsa-cert.pem", "ec-sec1.pem"]])("%s with another key %s does not", (cert, key) => {
    expect(etcdClientKeyMatches(files[cert]!, files[key]!)).toBe(false);
  });
});
