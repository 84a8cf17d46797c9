/** writeFileSet: a set of files is written whole or not at all. */
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileSet } from "../../src/core/files.ts";
import { tempDir } from "../helpers/cli.ts";

const tmp = tempDir("mesh-files-");
afterAll(() => tmp.cleanup());

test("a set replaces every file, keys private, and leaves nothing beside them", () => {
  const dir = join(tmp.path, "ok");
  writeFileSet([{ path: join(dir, "key.pem"), content: "old key", secret: true }], { force: false });
  writeFileSet(
    [
      { path: join(dir, "key.pem"), content: "new key", secret: true },
      { path: join(dir, "chain.pem"), content: "new chain" },
    ],
    { force: true },
  );
  expect(readFileSync(join(dir, "key.pem"), "utf8")).toBe("new key");
  expect(statSync(join(dir, "key.pem")).mode & 0o777).toBe(0o600);
  expect(readdirSync(dir).sort()).toEqual(["chain.pem", "key.pem"]);
});

test("a rename failing part-way puts back the files already replaced and removes the new ones", () => {
  const dir = join(tmp.path, "half");
  mkdirSync(dir);
  writeFileSync(join(dir, "key.pem"), "old key", { mode: 0o600 });
  mkdirSync(join(dir, "bundle.pem")); // a target that cannot be renamed over: a directory
  writeFileSync(join(dir, "bundle.pem", "x"), "");
  expect(() =>
    writeFileSet(
      [
        { path: join(dir, "key.pem"), content: "new key", secret: true },
        { path: join(dir, "chain.pem"), content: "new chain" },
        { path: join(dir, "bundle.pem"), content: "new bundle" },
      ],
      { force: true },
    ),
  ).toThrow();
  expect(readFileSync(join(dir, "key.pem"), "utf8")).toBe("old key");
  expect(statSync(join(dir, "key.pem")).mode & 0o777).toBe(0o600);
  expect(readdirSync(dir).sort()).toEqual(["bundle.pem", "key.pem"]);
});
