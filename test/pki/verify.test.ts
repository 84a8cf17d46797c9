import { beforeAll, describe, expect, test } from "bun:test";
import {
  describeFailure,
  FAILURE_SUMMARY,
  MAX_CHAIN_LENGTH,
  TrustBundle,
  verifyPeerChain,
  type VerifyFailure,
  type VerifyOptions,
  type VerifyResult,
} from "../../src/pki/verify.ts";
import { x509 } from "../../src/pki/x509.ts";
import {
  chainOf,
  fromNow,
  makeIntermediate,
  makeLeaf,
  makeRoot,
  withBrokenSignature,
  type Issued,
} from "../helpers/certs.ts";

const TD = "example.org";
const OTHER_TD = "other.test";
const HOUR = 3600_000;

let root: Issued;
let int: Issued;
let leaf: Issued;
let bundle: TrustBundle;

beforeAll(async () => {
  root = await makeRoot({ trustDomain: TD });
  int = await makeIntermediate(root);
  leaf = await makeLeaf(int);
  bundle = new TrustBundle().add(root.cert);
});

function expectFailure(result: VerifyResult, reason: VerifyFailure, ...detailParts: string[]): void {
  if (result.ok) throw new Error(`expected ${reason}, but the chain verified as ${result.spiffeId}`);
  expect({ reason: result.reason, detail: result.detail }).toEqual({ reason, detail: expect.any(String) });
  for (const part of detailParts) expect(result.detail).toContain(part);
}

/** A leaf under the shared intermediate, verified as [leaf, int] against the shared bundle. */
async function verifyLeaf(opts: Parameters<typeof makeLeaf>[1], vopts?: VerifyOptions): Promise<VerifyResult> {
  const l = await makeLeaf(int, opts);
  return verifyPeerChain(chainOf(l, int), bundle, vopts);
}

describe("a valid chain", () => {
  test("leaf + intermediate verifies and yields the leaf's SPIFFE ID", async () => {
    const r = await verifyPeerChain(chainOf(leaf, int), bundle);
    if (!r.ok) throw new Error(describeFailure(r));
    expect(r.spiffeId).toBe("spiffe://example.org/ns/default/sa/web");
    expect(r.id).toEqual({ trustDomain: TD, path: "/ns/default/sa/web" });
    expect(r.leaf).toBe(leaf.cert);
    expect(r.path).toEqual([leaf.cert, int.cert, root.cert]);
  });

  test("the root re-sent at the end of the chain is accepted and the bundle's copy anchors", async () => {
    const r = await verifyPeerChain(chainOf(leaf, int, root), bundle);
    expect(r.ok && r.path.length).toBe(3);
  });

  test("a leaf signed directly by the root verifies", async () => {
    const direct = await makeLeaf(root, { uris: ["spiffe://example.org/ns/a/sa/b"] });
    const r = await verifyPeerChain(chainOf(direct), bundle);
    expect(r.ok && r.spiffeId).toBe("spiffe://example.org/ns/a/sa/b");
  });

  test("extra DNS SANs beside the one URI SAN are allowed", async () => {
    const r = await verifyLeaf({ dns: ["web.example.org"] });
    expect(r.ok).toBe(true);
  });

  test("the trustDomains option accepts a listed domain", async () => {
    const r = await verifyPeerChain(chainOf(leaf, int), bundle, { trustDomains: [TD] });
    expect(r.ok).toBe(true);
  });
});

describe("chain shape", () => {
  test("an empty chain → empty_chain", async () => {
    expectFailure(await verifyPeerChain([], bundle), "empty_chain");
  });

  test(`more than ${MAX_CHAIN_LENGTH} certificates → unknown_issuer, saying why`, async () => {
    const long = [leaf.cert, ...Array.from({ length: MAX_CHAIN_LENGTH }, () => int.cert)];
    expectFailure(await verifyPeerChain(long, bundle), "unknown_issuer", `${MAX_CHAIN_LENGTH + 1} certificates`);
  });
});

describe("validity", () => {
  test("an expired leaf → expired", async () => {
    expectFailure(await verifyLeaf({ notBefore: fromNow(-2 * HOUR), notAfter: fromNow(-HOUR) }), "expired", "leaf certificate");
  });

  test("a leaf not valid yet → not_yet_valid", async () => {
    expectFailure(await verifyLeaf({ notBefore: fromNow(HOUR) }), "not_yet_valid", "leaf certificate");
  });

  test("an expired intermediate → expired, naming it", async () => {
    const old = await makeIntermediate(root, { subject: "CN=Old Intermediate", notAfter: fromNow(-HOUR), notBefore: fromNow(-2 * HOUR) });
    const l = await makeLeaf(old);
    expectFailure(await verifyPeerChain(chainOf(l, old), bundle), "expired", "intermediate certificate #1", "CN=Old Intermediate");
  });

  test("an expired trust-bundle root → expired, naming it", async () => {
    const r0 = await makeRoot({ subject: "CN=Old Root", notBefore: fromNow(-2 * HOUR), notAfter: fromNow(-HOUR) });
    const l = await makeLeaf(r0);
    expectFailure(await verifyPeerChain(chainOf(l), new TrustBundle().add(r0.cert)), "expired", "trust bundle root", "CN=Old Root");
  });

  test("`now` is honoured: the valid chain is expired a year later and not yet valid a day earlier", async () => {
    expectFailure(await verifyPeerChain(chainOf(leaf, int), bundle, { now: fromNow(400 * 24 * HOUR) }), "expired");
    expectFailure(await verifyPeerChain(chainOf(leaf, int), bundle, { now: fromNow(-24 * HOUR) }), "not_yet_valid");
  });
});

describe("the leaf's identity", () => {
  test("no SAN at all → no_uri_san", async () => {
    expectFailure(await verifyLeaf({ uris: [] }), "no_uri_san");
  });

  test("identity only in a DNS SAN → no_uri_san", async () => {
    expectFailure(await verifyLeaf({ uris: [], dns: ["web.example.org"] }), "no_uri_san", "web.example.org");
  });

  test("two URI SANs → multiple_uri_sans, even when one is not a SPIFFE ID", async () => {
    expectFailure(await verifyLeaf({ uris: ["spiffe://example.org/a", "spiffe://example.org/b"] }), "multiple_uri_sans");
    expectFailure(await verifyLeaf({ uris: ["spiffe://example.org/a", "https://example.org/b"] }), "multiple_uri_sans");
  });

  for (const uri of [
    "spiffe://example.org/a/../b",
    "spiffe://example.org:443/x",
    "spiffe://example.org/x?q",
    "https://example.org/x",
    "spiffe://example.org/x#f",
    "spiffe://example.org/x%41",
    "spiffe://Example.org/x",
    "spiffe://example.org/x/",
    "spiffe://example.org",
  ]) {
    test(`${uri} → malformed_id`, async () => {
      expectFailure(await verifyLeaf({ uris: [uri] }), "malformed_id");
    });
  }
});

describe("trust domain", () => {
  test("a leaf of a trust domain the bundle lacks → wrong_trust_domain", async () => {
    const otherRoot = await makeRoot({ trustDomain: OTHER_TD });
    const l = await makeLeaf(otherRoot);
    expectFailure(await verifyPeerChain(chainOf(l), bundle), "wrong_trust_domain", `"${OTHER_TD}"`);
  });

  test("a trust domain in the bundle but not in trustDomains → wrong_trust_domain", async () => {
    expectFailure(
      await verifyPeerChain(chainOf(leaf, int), bundle, { trustDomains: [OTHER_TD] }),
      "wrong_trust_domain",
      "not accepted",
    );
  });

  test("an accepted trust domain with no roots in the bundle → wrong_trust_domain", async () => {
    const otherRoot = await makeRoot({ trustDomain: OTHER_TD });
    const l = await makeLeaf(otherRoot);
    expectFailure(
      await verifyPeerChain(chainOf(l), bundle, { trustDomains: [TD, OTHER_TD] }),
      "wrong_trust_domain",
      "no roots",
    );
  });

  test("a leaf claiming example.org but chaining to other.test's root → wrong_trust_domain", async () => {
    const otherRoot = await makeRoot({ trustDomain: OTHER_TD, subject: "CN=Other Root" });
    const both = new TrustBundle().add(root.cert).add(otherRoot.cert);
    const forged = await makeLeaf(otherRoot, { uris: ["spiffe://example.org/ns/default/sa/web"] });
    expectFailure(await verifyPeerChain(chainOf(forged), both), "wrong_trust_domain", "CN=Other Root", `"${OTHER_TD}"`);
    // The same with the foreign root and an intermediate presented in the chain.
    const otherInt = await makeIntermediate(otherRoot);
    const forged2 = await makeLeaf(otherInt, { uris: ["spiffe://example.org/x"] });
    expectFailure(await verifyPeerChain(chainOf(forged2, otherInt, otherRoot), both), "wrong_trust_domain");
  });
});

describe("leaf constraints", () => {
  test("a CA certificate as the leaf → leaf_is_ca", async () => {
    expectFailure(await verifyLeaf({ ca: true }), "leaf_is_ca");
  });

  test("basicConstraints absent on the leaf is fine", async () => {
    expect((await verifyLeaf({ ca: null })).ok).toBe(true);
  });

  test("key usage without digitalSignature → leaf_key_usage", async () => {
    expectFailure(await verifyLeaf({ keyUsages: ["keyEncipherment"] }), "leaf_key_usage", "digitalSignature");
  });

  test("keyCertSign or cRLSign on the leaf → leaf_key_usage", async () => {
    expectFailure(await verifyLeaf({ keyUsages: ["digitalSignature", "keyCertSign"] }), "leaf_key_usage", "keyCertSign");
    expectFailure(await verifyLeaf({ keyUsages: ["digitalSignature", "cRLSign"] }), "leaf_key_usage", "cRLSign");
  });

  test("no keyUsage extension on the leaf → leaf_key_usage (X509-SVID §4.3 makes it mandatory)", async () => {
    expectFailure(await verifyLeaf({ keyUsages: null }), "leaf_key_usage", "no keyUsage");
  });

  test("an EKU with neither serverAuth nor clientAuth → wrong_eku", async () => {
    expectFailure(await verifyLeaf({ eku: ["codeSigning"] }), "wrong_eku", "1.3.6.1.5.5.7.3.3");
  });

  test("requiredEku: serverAuth-only leaf where clientAuth is required → wrong_eku", async () => {
    expectFailure(await verifyLeaf({ eku: ["serverAuth"] }, { requiredEku: "clientAuth" }), "wrong_eku", "clientAuth");
    expect((await verifyLeaf({ eku: ["serverAuth"] }, { requiredEku: "serverAuth" })).ok).toBe(true);
  });

  test("requiredEku is satisfied by an absent EKU extension and by anyExtendedKeyUsage", async () => {
    expect((await verifyLeaf({ eku: null }, { requiredEku: "clientAuth" })).ok).toBe(true);
    expect((await verifyLeaf({ eku: ["2.5.29.37.0"] }, { requiredEku: "clientAuth" })).ok).toBe(true);
  });
});

describe("issuer constraints", () => {
  test("an intermediate with cA=false → issuer_not_ca", async () => {
    const notCa = await makeIntermediate(root, { ca: false });
    const l = await makeLeaf(notCa);
    expectFailure(await verifyPeerChain(chainOf(l, notCa), bundle), "issuer_not_ca", "intermediate certificate #1", "false");
  });

  test("an intermediate without basicConstraints → issuer_not_ca", async () => {
    const noBc = await makeIntermediate(root, { ca: null });
    const l = await makeLeaf(noBc);
    expectFailure(await verifyPeerChain(chainOf(l, noBc), bundle), "issuer_not_ca", "absent");
  });

  test("a leaf used as the issuer of another leaf → issuer_not_ca", async () => {
    const victim = await makeLeaf(int, { subject: "CN=Victim Workload" });
    const child = await makeLeaf(victim, { uris: ["spiffe://example.org/ns/evil/sa/x"] });
    expectFailure(await verifyPeerChain(chainOf(child, victim, int), bundle), "issuer_not_ca", "CN=Victim Workload");
  });

  test("a trust-bundle root that is not a CA → issuer_not_ca", async () => {
    const r0 = await makeRoot({ ca: false });
    const l = await makeLeaf(r0);
    expectFailure(await verifyPeerChain(chainOf(l), new TrustBundle().add(r0.cert)), "issuer_not_ca", "trust bundle root");
  });

  test("an intermediate without keyCertSign → issuer_without_key_cert_sign", async () => {
    const noSign = await makeIntermediate(root, { keyUsages: ["cRLSign", "digitalSignature"] });
    const l = await makeLeaf(noSign);
    expectFailure(await verifyPeerChain(chainOf(l, noSign), bundle), "issuer_without_key_cert_sign", "lacks keyCertSign");
  });

  test("a root without a keyUsage extension → issuer_without_key_cert_sign", async () => {
    const r0 = await makeRoot({ keyUsages: null });
    const l = await makeLeaf(r0);
    expectFailure(
      await verifyPeerChain(chainOf(l), new TrustBundle().add(r0.cert)),
      "issuer_without_key_cert_sign",
      "trust bundle root",
    );
  });
});

describe("pathLenConstraint (RFC 5280: non-self-issued intermediates below the CA)", () => {
  test("root pathLen 0 with one intermediate → path_length_exceeded", async () => {
    const r0 = await makeRoot({ pathLen: 0 });
    const i1 = await makeIntermediate(r0);
    const l = await makeLeaf(i1);
    expectFailure(await verifyPeerChain(chainOf(l, i1), new TrustBundle().add(r0.cert)), "path_length_exceeded", "pathLenConstraint 0");
  });

  test("root pathLen 1 with two intermediates → path_length_exceeded; with one → ok", async () => {
    const r1 = await makeRoot({ pathLen: 1 });
    const b = new TrustBundle().add(r1.cert);
    const i1 = await makeIntermediate(r1);
    const i2 = await makeIntermediate(i1);
    expectFailure(await verifyPeerChain(chainOf(await makeLeaf(i2), i2, i1), b), "path_length_exceeded", "2 intermediate");
    expect((await verifyPeerChain(chainOf(await makeLeaf(i1), i1), b)).ok).toBe(true);
  });

  test("an intermediate's own pathLen 0 over a further intermediate → path_length_exceeded", async () => {
    const i1 = await makeIntermediate(root, { pathLen: 0, subject: "CN=Leaf-only CA" });
    const i2 = await makeIntermediate(i1);
    const l = await makeLeaf(i2);
    expectFailure(await verifyPeerChain(chainOf(l, i2, i1), bundle), "path_length_exceeded", "CN=Leaf-only CA");
    expect((await verifyPeerChain(chainOf(await makeLeaf(i1), i1), bundle)).ok).toBe(true);
  });

  test("a self-issued (key rollover) intermediate does not count", async () => {
    const r1 = await makeRoot({ pathLen: 1 });
    const oldKey = await makeIntermediate(r1, { subject: "CN=Rollover CA" });
    const newKey = await makeIntermediate(oldKey, { subject: "CN=Rollover CA" }); // subject == issuer
    const l = await makeLeaf(newKey);
    expect((await verifyPeerChain(chainOf(l, newKey, oldKey), new TrustBundle().add(r1.cert))).ok).toBe(true);
    // Control: pathLen 0 still refuses the one non-self-issued intermediate.
    const r0 = await makeRoot({ pathLen: 0 });
    const old0 = await makeIntermediate(r0, { subject: "CN=Rollover CA 0" });
    const new0 = await makeIntermediate(old0, { subject: "CN=Rollover CA 0" });
    const l0 = await makeLeaf(new0);
    expectFailure(await verifyPeerChain(chainOf(l0, new0, old0), new TrustBundle().add(r0.cert)), "path_length_exceeded", "1 intermediate");
  });
});

describe("path building", () => {
  test("the intermediate is missing from the chain → unknown_issuer", async () => {
    expectFailure(await verifyPeerChain(chainOf(leaf), bundle), "unknown_issuer", int.cert.subject, "chain ends");
  });

  test("a chain from a root of the same trust domain that is not in the bundle → unknown_issuer", async () => {
    const stranger = await makeRoot({ trustDomain: TD });
    const i1 = await makeIntermediate(stranger);
    expectFailure(await verifyPeerChain(chainOf(await makeLeaf(i1), i1, stranger), bundle), "unknown_issuer");
  });

  test("a chain out of order → unknown_issuer, naming the certificate that is not the issuer", async () => {
    const i1 = await makeIntermediate(root);
    const i2 = await makeIntermediate(i1, { subject: "CN=Second" });
    const l = await makeLeaf(i2);
    expectFailure(await verifyPeerChain(chainOf(l, i1, i2), bundle), "unknown_issuer", "is not its issuer");
  });

  test("an intermediate impostor with the same name but another key → unknown_issuer (key ids differ)", async () => {
    const name = "CN=Shared Name CA";
    const real = await makeIntermediate(root, { subject: name });
    const impostor = await makeRoot({ subject: name }); // self-signed, not in the bundle
    const l = await makeLeaf(impostor);
    // Presented with the real CA's certificate: the name matches, the key does not.
    expectFailure(await verifyPeerChain(chainOf(l, real), bundle), "unknown_issuer", name, "is not its issuer");
  });

  test("the same without key identifiers → bad_signature (the name is the only claim, and it fails)", async () => {
    const name = "CN=Shared Name CA 2";
    const real = await makeIntermediate(root, { subject: name, keyIds: false });
    const impostor = await makeRoot({ subject: name, keyIds: false });
    const l = await makeLeaf(impostor, { keyIds: false });
    expectFailure(await verifyPeerChain(chainOf(l, real), bundle), "bad_signature", name);
  });

  test("a root impostor with the bundle root's name → unknown_issuer, or bad_signature without key ids", async () => {
    const impostor = await makeRoot({ subject: root.cert.subject });
    const l = await makeLeaf(impostor);
    expectFailure(await verifyPeerChain(chainOf(l), bundle), "unknown_issuer", "another key");
    expectFailure(await verifyPeerChain(chainOf(l, impostor), bundle), "unknown_issuer", "another key");
    const bare = await makeRoot({ subject: root.cert.subject, keyIds: false });
    const l2 = await makeLeaf(bare, { keyIds: false });
    expectFailure(await verifyPeerChain(chainOf(l2), bundle), "bad_signature", "trust bundle root");
  });

  test("a root rotated out of the bundle (same name, new key) → unknown_issuer for its old chains", async () => {
    const oldRoot = await makeRoot({ subject: "CN=Rotating Root" });
    const newRoot = await makeRoot({ subject: "CN=Rotating Root" });
    const oldInt = await makeIntermediate(oldRoot);
    const l = await makeLeaf(oldInt);
    const both = new TrustBundle().add(oldRoot.cert).add(newRoot.cert);
    expect((await verifyPeerChain(chainOf(l, oldInt), both)).ok).toBe(true);
    expectFailure(await verifyPeerChain(chainOf(l, oldInt), new TrustBundle().add(newRoot.cert)), "unknown_issuer");
  });

  test("a tampered signature on the leaf or the intermediate → bad_signature", async () => {
    expectFailure(await verifyPeerChain([withBrokenSignature(leaf.cert), int.cert], bundle), "bad_signature", "leaf certificate");
    expectFailure(await verifyPeerChain([leaf.cert, withBrokenSignature(int.cert)], bundle), "bad_signature", "chain certificate #2");
  });
});

describe("extensions the verifier cannot process", () => {
  test("an unknown critical extension on an intermediate → unsupported_cert", async () => {
    const odd = await makeIntermediate(root, { extensions: [new x509.Extension("1.2.3.4.5", true, new Uint8Array([5, 0]))] });
    const l = await makeLeaf(odd);
    expectFailure(await verifyPeerChain(chainOf(l, odd), bundle), "unsupported_cert", "1.2.3.4.5");
  });

  test("an unknown non-critical extension is ignored", async () => {
    const odd = await makeIntermediate(root, { extensions: [new x509.Extension("1.2.3.4.5", false, new Uint8Array([5, 0]))] });
    expect((await verifyPeerChain(chainOf(await makeLeaf(odd), odd), bundle)).ok).toBe(true);
  });

  test("two SAN extensions on the leaf → unsupported_cert (a second SAN could hide a second URI)", async () => {
    const second = new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://example.org/b" }]);
    expectFailure(await verifyLeaf({ extensions: [second] }), "unsupported_cert", "more than once");
  });

  test("an extension whose value does not parse → unsupported_cert", async () => {
    const garbledBc = new x509.Extension("2.5.29.19", true, new Uint8Array([0x05, 0x00])); // NULL, not a SEQUENCE
    expectFailure(await verifyLeaf({ ca: null, extensions: [garbledBc] }), "unsupported_cert", "cannot be parsed");
  });

  // GeneralNames { otherName { 1.2.3.4, [0] UTF8String "x" }, URI... }: a SAN type the parser skips.
  function sanWithOtherName(...uris: string[]): x509.Extension {
    const body = [0xa0, 0x0a, 0x06, 0x03, 0x2a, 0x03, 0x04, 0xa0, 0x03, 0x0c, 0x01, 0x78];
    for (const u of uris) {
      const bytes = new TextEncoder().encode(u);
      body.push(0x86, bytes.length, ...bytes);
    }
    return new x509.Extension("2.5.29.17", false, new Uint8Array([0x30, body.length, ...body]));
  }

  test("an otherName SAN beside the one URI SAN is allowed (X509-SVID §2), and does not hide a second URI", async () => {
    const one = await verifyLeaf({ uris: [], extensions: [sanWithOtherName("spiffe://example.org/a")] });
    expect(one.ok && one.spiffeId).toBe("spiffe://example.org/a");
    const two = await verifyLeaf({ uris: [], extensions: [sanWithOtherName("spiffe://example.org/a", "spiffe://example.org/b")] });
    expectFailure(two, "multiple_uri_sans");
  });
});

test("describeFailure and FAILURE_SUMMARY cover every reason", async () => {
  const r = await verifyPeerChain([], bundle);
  expect(r.ok).toBe(false);
  if (!r.ok) expect(describeFailure(r)).toBe("peer certificate rejected (empty_chain): the peer presented no certificate");
  expect(Object.keys(FAILURE_SUMMARY)).toHaveLength(16);
});
