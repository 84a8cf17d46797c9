import { beforeAll, describe, expect, test } from "bun:test";
import { verifyCaChain, type CaVerifyResult } from "../../src/pki/verify-ca.ts";
import { TrustBundle, type VerifyFailure } from "../../src/pki/verify.ts";
import { x509 } from "../../src/pki/x509.ts";
import { chainOf, fromNow, makeIntermediate, makeLeaf, makeRoot, type Issued } from "../helpers/certs.ts";

const TD = "example.org";
const HOUR = 3600_000;

let root: Issued;
let int: Issued;
let bundle: TrustBundle;

beforeAll(async () => {
  root = await makeRoot({ trustDomain: TD });
  int = await makeIntermediate(root);
  bundle = new TrustBundle().add(root.cert);
});

function expectFailure(result: CaVerifyResult, reason: VerifyFailure, ...detailParts: string[]): void {
  if (result.ok) throw new Error(`expected ${reason}, but the CA verified in ${result.trustDomain}`);
  expect(result.reason).toBe(reason);
  for (const part of detailParts) expect(result.detail).toContain(part);
}

describe("verifyCaChain", () => {
  test("an intermediate signed by a bundle root, and the root itself, are trusted", async () => {
    const r = await verifyCaChain(chainOf(int), bundle);
    expect(r.ok && { td: r.trustDomain, path: r.path }).toEqual({ td: TD, path: [int.cert, root.cert] });
    expect((await verifyCaChain(chainOf(root), bundle)).ok).toBe(true);
  });

  test("an expired intermediate → expired, naming it as the CA certificate", async () => {
    const old = await makeIntermediate(root, { subject: "CN=Old Intermediate", notBefore: fromNow(-2 * HOUR), notAfter: fromNow(-HOUR) });
    expectFailure(await verifyCaChain(chainOf(old), bundle), "expired", 'CA certificate "CN=Old Intermediate"');
  });

  test("an expired root under a valid intermediate → expired, naming the root", async () => {
    const oldRoot = await makeRoot({ subject: "CN=Old Root", notBefore: fromNow(-2 * HOUR), notAfter: fromNow(-HOUR) });
    const under = await makeIntermediate(oldRoot);
    expectFailure(await verifyCaChain(chainOf(under), new TrustBundle().add(oldRoot.cert)), "expired", "trust bundle root", "CN=Old Root");
  });

  test("an intermediate not valid yet → not_yet_valid; `now` is honoured", async () => {
    const early = await makeIntermediate(root, { notBefore: fromNow(HOUR) });
    expectFailure(await verifyCaChain(chainOf(early), bundle), "not_yet_valid");
    expect((await verifyCaChain(chainOf(early), bundle, { now: fromNow(2 * HOUR) })).ok).toBe(true);
  });

  test("an intermediate of another root → unknown_issuer; of another trust domain → wrong_trust_domain", async () => {
    const stranger = await makeIntermediate(await makeRoot({ trustDomain: TD }));
    expectFailure(await verifyCaChain(chainOf(stranger), bundle), "unknown_issuer");
    const partner = await makeIntermediate(await makeRoot({ trustDomain: "partner.test" }));
    expectFailure(await verifyCaChain(chainOf(partner), bundle), "wrong_trust_domain", "partner.test");
  });

  test("the intermediate above it is checked too: an expired one fails the path", async () => {
    const oldMid = await makeIntermediate(root, { pathLen: 0, notBefore: fromNow(-2 * HOUR), notAfter: fromNow(-HOUR) });
    const below = await makeIntermediate(oldMid);
    expectFailure(await verifyCaChain(chainOf(below, oldMid), bundle), "expired", "intermediate certificate #1");
  });

  test("a leaf is no CA → issuer_not_ca; an unparseable or unknown critical extension → unsupported_cert", async () => {
    expectFailure(await verifyCaChain(chainOf(await makeLeaf(int)), bundle), "issuer_not_ca");
    const garbledKu = new x509.Extension("2.5.29.15", true, new Uint8Array([0x05, 0x00])); // NULL, not a BIT STRING
    expectFailure(await verifyCaChain(chainOf(await makeIntermediate(root, { keyUsages: null, extensions: [garbledKu] })), bundle), "unsupported_cert", "cannot be parsed");
    const odd = new x509.Extension("1.2.3.4.5", true, new Uint8Array([5, 0]));
    expectFailure(await verifyCaChain(chainOf(await makeIntermediate(root, { extensions: [odd] })), bundle), "unsupported_cert", "1.2.3.4.5");
    expectFailure(await verifyCaChain([], bundle), "empty_chain");
  });

  test("a CA without a URI SAN is judged against every trust domain of the bundle", async () => {
    const bare = await makeIntermediate(root, { uris: [] });
    const r = await verifyCaChain(chainOf(bare), bundle);
    expect(r.ok && r.trustDomain).toBe(TD);
  });
});
