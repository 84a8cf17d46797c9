/** Which intermediates' leaves still chain to a CA directory's root, read from its files (retired/ included). */
import { afterAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { asCertificate, loadCa } from "../../src/ca/authority.ts";
import { signerKeyIdsUnderRoot } from "../../src/ca/signers-under-root.ts";
import { mesh, tempDir } from "../helpers/cli.ts";

const tmp = tempDir("mesh-signers-under-root-");
afterAll(() => tmp.cleanup());

const keyIdOf = async (dir: string) => asCertificate((await loadCa(dir)).intermediate.cert).known.subjectKeyId!;

test("the current intermediate and those retired under the same root; not those of a replaced root; unreadable retired files passed over", async () => {
  const dir = join(tmp.path, "ca");
  expect((await mesh("ca", "init", "--out", dir)).code).toBe(0);
  const first = await keyIdOf(dir);
  expect((await mesh("ca", "rotate", "--ca-dir", dir)).code).toBe(0);
  const second = await keyIdOf(dir);
  expect([...signerKeyIdsUnderRoot(await loadCa(dir))].sort()).toEqual([first, second].sort());

  expect((await mesh("ca", "rotate", "--root", "--ca-dir", dir)).code).toBe(0);
  const third = await keyIdOf(dir);
  expect((await mesh("ca", "rotate", "--ca-dir", dir)).code).toBe(0);
  const fourth = await keyIdOf(dir);
  writeFileSync(join(dir, "retired", "intermediate-garbage.pem"), "not a certificate\n");
  expect([...signerKeyIdsUnderRoot(await loadCa(dir))].sort()).toEqual([third, fourth].sort());
});
