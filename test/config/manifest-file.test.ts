import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { readManifestFile } from "../../src/config/manifest-file";
import { decodeUtf8, firstInvalidByte } from "../../src/config/utf8-text";
import { scratch, type Scratch } from "./helpers";

const bytes = (...b: number[]) => new Uint8Array(b);

describe("decodeUtf8", () => {
  test("UTF-8 is decoded, a UTF-8 byte order mark dropped", () => {
    expect(decodeUtf8(new TextEncoder().encode("a: é"))).toEqual({ ok: true, text: "a: é" });
    expect(decodeUtf8(bytes(0xef, 0xbb, 0xbf, 0x61))).toEqual({ ok: true, text: "a" });
  });

  test("the first bad sequence is found where it starts, whatever makes it bad", () => {
    expect(firstInvalidByte(bytes(0x61, 0x80))).toBe(1); // a continuation byte alone
    expect(firstInvalidByte(bytes(0x61, 0xe9, 0x22))).toBe(1); // Latin-1 "é" before a quote
    expect(firstInvalidByte(bytes(0xc3, 0xa9, 0xc0, 0xaf))).toBe(2); // overlong "/"
    expect(firstInvalidByte(bytes(0xed, 0xa0, 0x80))).toBe(0); // a surrogate
    expect(firstInvalidByte(bytes(0xf4, 0x90, 0x80, 0x80))).toBe(0); // past U+10FFFF
    expect(firstInvalidByte(bytes(0x61, 0xe2, 0x82))).toBe(1); // cut off at the end
    expect(firstInvalidByte(bytes(0xf0, 0x9f, 0x98, 0x80, 0xff))).toBe(4);
  });

  test("a refusal names the byte, its offset and its line", () => {
    expect(decodeUtf8(bytes(0x61, 0x0a, 0x62, 0xe9))).toEqual({ ok: false, message: "not valid UTF-8: byte 0xE9 at byte offset 3 (line 2)" });
  });
});

describe("readManifestFile", () => {
  let s: Scratch;
  beforeEach(async () => {
    s = await scratch();
  });
  afterEach(async () => {
    await s.cleanup();
  });

  test("a file up to the limit is read; one byte more is refused before it is read", async () => {
    const at = await s.write("at.yaml", "a: 1234\n");
    const over = await s.write("over.yaml", "a: 12345\n");
    expect(await readManifestFile(at, 8)).toEqual({ ok: true, text: "a: 1234\n" });
    expect(await readManifestFile(over, 8)).toMatchObject({ ok: false, message: expect.stringContaining("too large: 9 bytes") });
  });

  test("an unreadable path says why", async () => {
    expect(await readManifestFile(s.path("missing.yaml"))).toEqual({ ok: false, message: "cannot read file: no such file or directory" });
    expect(await readManifestFile(s.dir)).toEqual({ ok: false, message: "cannot read file: is a directory" });
  });
});
