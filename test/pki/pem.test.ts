import { describe, expect, test } from "bun:test";
import { decodePem, encodePem } from "../../src/pki/pem.ts";

const der = new Uint8Array(Array.from({ length: 100 }, (_, i) => i));
const cert = encodePem("CERTIFICATE", der);
const key = encodePem("PRIVATE KEY", new Uint8Array([1, 2, 3]));

describe("decodePem: what is read", () => {
  test("blocks of any type in order, prose around and between them skipped", () => {
    const blocks = decodePem(`issued by ops\n${cert}\nsee the runbook\n${key}-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\ntrailer`);
    expect(blocks.map((b) => b.type)).toEqual(["CERTIFICATE", "PRIVATE KEY", "X509 CRL"]);
    expect(blocks[0]!.der).toEqual(der);
  });

  test("CRLF line endings, trailing whitespace and a one-line form are the same block", () => {
    const crlf = cert.replace(/\n/g, " \t\r\n");
    const oneLine = cert.replace(/\n/g, " ");
    for (const text of [crlf, oneLine]) expect(decodePem(text).map((b) => b.der)).toEqual([der]);
  });

  test("RFC 1421 headers (a legacy encrypted key) are skipped up to the blank line", () => {
    const legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00FF\n\nAAEC\n-----END RSA PRIVATE KEY-----\n";
    expect(decodePem(cert + legacy).map((b) => [b.type, b.der.length])).toEqual([["CERTIFICATE", 100], ["RSA PRIVATE KEY", 3]]);
  });

  test("text without a block is no block", () => {
    expect(decodePem("nothing here\n-----\n")).toEqual([]);
  });
});

describe("decodePem: a block cut short or corrupted is refused, naming it", () => {
  const lines = cert.split("\n");
  const cases: [string, string, string][] = [
    ["no END line at the end", cert + lines.slice(0, 2).join("\n"), 'PEM block "CERTIFICATE" at line 6 has no END line'],
    ["no END line before the next block", lines.slice(0, 2).join("\n") + "\n" + cert, 'PEM block "CERTIFICATE" at line 1 has no END line before the next BEGIN'],
    ["an END line without BEGIN", "-----BEGIN CERTIFICATE----\n" + lines.slice(1).join("\n"), 'the END line "CERTIFICATE" at line 5 has no BEGIN line'],
    ["END of another label", cert.replace("END CERTIFICATE", "END PRIVATE KEY"), 'PEM block "CERTIFICATE" at line 1 ends with "PRIVATE KEY"'],
    ["a stray '-' in the body", cert.replace(lines[1]!, lines[1]!.slice(0, 10) + "-" + lines[1]!.slice(11)), "is not valid base64"],
    ["a character outside base64", cert.replace(lines[1]!, lines[1]!.slice(0, 10) + "*" + lines[1]!.slice(11)), "is not valid base64"],
    ["padding in the middle", cert.replace(lines[1]!, lines[1]!.slice(0, 62) + "=="), "is not valid base64"],
  ];
  for (const [label, text, message] of cases)
    test(label, () => {
      expect(() => decodePem(text)).toThrow(message);
    });
});
