/** The CA refuses input that would make a broken result: a CSR of another kind, a rotation under a root near its end. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseCsr } from "../../src/ca/csr.ts";
import { rotateIntermediate } from "../../src/ca/rotate.ts";
import { DataError } from "../../src/core/errors.ts";
import { fromNow, makeIntermediate, makeRoot } from "../helpers/certs.ts";
import { tempDir } from "../helpers/cli.ts";

const tmp = tempDir("mesh-ca-bad-input-");
afterAll(() => tmp.cleanup());
const DAY = 86_400_000;

describe("parseCsr", () => {
  test.each([
    ["a certificate", async () => (await makeRoot()).pem, "holds a CERTIFICATE block (line 1), not a PEM CERTIFICATE REQUEST"],
    ["a key", async () => (await makeRoot()).keyPem, "holds a PRIVATE KEY block (line 1), not a PEM CERTIFICATE REQUEST"],
    ["text", async () => "hello\n", "not a PEM CERTIFICATE REQUEST: no PEM block found"],
    ["a CSR block of junk", async () => "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "not a PEM CERTIFICATE REQUEST: the CERTIFICATE REQUEST block at line 1 is not a PKCS#10 request"],
  ])("names %s as what it is, in its own words", async (_what, make, message) => {
    const parse = async () => parseCsr(await make(), "x.csr");
    await expect(parse()).rejects.toThrow(DataError);
    await expect(parse()).rejects.toThrow(`x.csr: ${message}`);
  });
});

describe("rotateIntermediate", () => {
  async function caDir(name: string, rootEnds: Date): Promise<string> {
    const root = await makeRoot({ trustDomain: "mesh.local", notBefore: fromNow(-48 * 3600_000), notAfter: rootEnds });
    const int = await makeIntermediate(root, { notBefore: fromNow(-48 * 3600_000), notAfter: rootEnds });
    const dir = join(tmp.path, name);
    mkdirSync(dir);
    for (const [f, text] of [["root.pem", root.pem], ["root.key", root.keyPem], ["intermediate.pem", int.pem], ["intermediate.key", int.keyPem], ["bundle.pem", root.pem]] as const)
      writeFileSync(join(dir, f), text);
    return dir;
  }
  const contents = (dir: string) => readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f), "utf8")]);

  test.each([
    ["has expired", -3600_000, "root.pem: root certificate expired at "],
    ["ends within the least an intermediate must live (30 days)", 29 * DAY, "sooner than the 30 days a new intermediate must live"],
  ])("refuses when the root %s, advising --root, and writes nothing", async (what, ends, message) => {
    const dir = await caDir(what.replace(/\W+/g, "-"), fromNow(ends));
    const before = contents(dir);
    const rotate = rotateIntermediate(dir);
    await expect(rotate).rejects.toThrow(DataError);
    await expect(rotate).rejects.toThrow(message);
    await expect(rotate).rejects.toThrow("mesh ca rotate --root");
    expect(contents(dir)).toEqual(before);
  });

  test("rotates under a root that outlives the least an intermediate must live", async () => {
    const dir = await caDir("long-enough", fromNow(31 * DAY));
    const next = await rotateIntermediate(dir);
    expect(next.cert.notAfter.getTime()).toBeGreaterThan(Date.now() + 30 * DAY);
  });
});
