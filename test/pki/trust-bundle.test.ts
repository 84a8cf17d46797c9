import { beforeAll, describe, expect, test } from "bun:test";
import { DataError } from "../../src/core/errors.ts";
import { spiffeIdOfLeaf, TrustBundle, verifyPeerChain } from "../../src/pki/verify.ts";
import { chainOf, makeIntermediate, makeLeaf, makeRoot, pemOf, type Issued } from "../helpers/certs.ts";

const TD = "example.org";
const OTHER_TD = "other.test";

let root: Issued;
let int: Issued;
let leaf: Issued;

beforeAll(async () => {
  root = await makeRoot({ trustDomain: TD });
  int = await makeIntermediate(root);
  leaf = await makeLeaf(int);
});

describe("spiffeIdOfLeaf", () => {
  test("reads the one URI SAN", () => {
    expect(spiffeIdOfLeaf(leaf.cert)).toEqual({
      ok: true,
      id: { trustDomain: TD, path: "/ns/default/sa/web" },
      spiffeId: "spiffe://example.org/ns/default/sa/web",
    });
  });

  test("reports typed reasons", async () => {
    const none = await makeLeaf(int, { uris: [], dns: ["a.example.org"] });
    const two = await makeLeaf(int, { uris: ["spiffe://example.org/a", "spiffe://example.org/b"] });
    expect(spiffeIdOfLeaf(none.cert)).toMatchObject({ ok: false, reason: "no_uri_san" });
    expect(spiffeIdOfLeaf(two.cert)).toMatchObject({ ok: false, reason: "multiple_uri_sans" });
    expect(spiffeIdOfLeaf(root.cert)).toMatchObject({ ok: false, reason: "malformed_id" }); // trust-domain ID, no path
  });
});

describe("TrustBundle", () => {
  test("fromPem reads several roots, grouping them by the trust domain in their URI SAN", async () => {
    const a2 = await makeRoot({ trustDomain: TD });
    const b1 = await makeRoot({ trustDomain: OTHER_TD });
    const b = TrustBundle.fromPem(pemOf(root, a2, b1, root)); // root twice: one anchor
    expect(b.trustDomains()).toEqual([TD, OTHER_TD]);
    expect(b.roots(TD).map((c) => c.subject)).toEqual([root.cert.subject, a2.cert.subject]);
    expect(b.roots(OTHER_TD).map((c) => c.subject)).toEqual([b1.cert.subject]);
    expect(b.roots("nowhere.test")).toEqual([]);
    expect(b.size).toBe(3);
    expect(b.allRoots()).toHaveLength(3);
    expect((await verifyPeerChain(chainOf(leaf, int), b)).ok).toBe(true);
  });

  test("an explicit trust domain overrides the root's SAN and allows roots without one", async () => {
    const bare = await makeRoot({ uris: [] });
    const b = TrustBundle.fromPem(bare.pem, "legacy.test");
    expect(b.trustDomains()).toEqual(["legacy.test"]);
  });

  test("bad PEM is a DataError naming the source", async () => {
    expect(() => TrustBundle.fromPem("not a pem at all", undefined, "bundle.pem")).toThrow(DataError);
    expect(() => TrustBundle.fromPem("not a pem at all", undefined, "bundle.pem")).toThrow("bundle.pem: no CERTIFICATE block");
    const garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    expect(() => TrustBundle.fromPem(pemOf(root) + garbage)).toThrow("certificate #2 of the trust bundle cannot be parsed");
  });

  test("a root cut short after a whole one is a DataError naming the source and the block, not one root fewer", async () => {
    const truncated = pemOf(root) + root.pem.split("\n").slice(0, 3).join("\n") + "\n";
    expect(() => TrustBundle.fromPem(truncated, undefined, "bundle.pem")).toThrow(DataError);
    expect(() => TrustBundle.fromPem(truncated, undefined, "bundle.pem")).toThrow(/^bundle\.pem: .*PEM block "CERTIFICATE" at line \d+ has no END line/);
  });

  test("a root without a SPIFFE trust-domain ID needs an explicit trust domain; a bad one is refused", async () => {
    const bare = await makeRoot({ uris: [] });
    expect(() => TrustBundle.fromPem(bare.pem)).toThrow("give its trust domain explicitly");
    expect(() => TrustBundle.fromPem(leaf.pem)).toThrow(DataError); // a workload ID has a path
    expect(() => TrustBundle.fromPem(root.pem, "Bad:Domain")).toThrow(DataError);
    // Nothing is added when one root of a PEM text is refused.
    const b = new TrustBundle();
    expect(() => b.addPem(pemOf(root, bare))).toThrow(DataError);
    expect(b.size).toBe(0);
  });
});
