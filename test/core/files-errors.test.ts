/** writeFileSet's refusals name the user's path, never a temporary file, and leave nothing behind. */
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CantCreateError } from "../../src/core/errors.ts";
import { fileInTheWay, writeFileSet } from "../../src/core/files.ts";
import { tempDir } from "../helpers/cli.ts";

const tmp = tempDir("mesh-files-errors-");
afterAll(() => tmp.cleanup());
const TEMP_NAME = /\.\d{10,}-[a-z0-9]+\.tmp/;

function refusal(fn: () => void): CantCreateError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CantCreateError);
    expect((err as Error).message).not.toMatch(TEMP_NAME);
    return err as CantCreateError;
  }
  throw new Error("not refused");
}

test("a regular file where a directory goes is named, at any depth", () => {
  const file = join(tmp.path, "file");
  writeFileSync(file, "x");
  for (const target of [join(file, "a.pem"), join(file, "sub", "dir", "a.pem")]) {
    const err = refusal(() => writeFileSet([{ path: target, content: "new", secret: true }], { force: true }));
    expect(err.message).toBe(`${file}: is not a directory, so ${target} cannot be written`);
  }
  expect(fileInTheWay(join(file, "sub"))).toBe(file);
  expect(fileInTheWay(join(tmp.path, "missing", "sub"))).toBeUndefined();
});

test("a directory where a file goes is named as one, with or without force, and is left as it was", () => {
  const dir = join(tmp.path, "set");
  mkdirSync(join(dir, "b.pem"), { recursive: true });
  const files = [{ path: join(dir, "a.pem"), content: "a" }, { path: join(dir, "b.pem"), content: "b" }];
  for (const force of [false, true]) {
    const err = refusal(() => writeFileSet(files, { force }));
    expect(err.message).toBe(`${join(dir, "b.pem")}: is a directory, where a file is to be written`);
    expect(readdirSync(dir)).toEqual(["b.pem"]);
  }
});
