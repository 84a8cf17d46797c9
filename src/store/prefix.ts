/**
 * Prefix ranges. A prefix is scanned as the key range [prefix, end) where `end` is the
 * smallest key greater than every key that starts with the prefix: an index range scan
 * instead of a filter over every key.
 */

/**
 * By code point order, which is UTF-8 byte order and so SQLite's BINARY collation.
 * Undefined when no such string exists (empty prefix, or all U+10FFFF): scan to the end.
 */
export function stringPrefixEnd(prefix: string): string | undefined {
  const cps = Array.from(prefix, (c) => c.codePointAt(0)!);
  while (cps.length) {
    const last = cps.pop()!;
    if (last < 0x10ffff) {
      cps.push(last + 1 === 0xd800 ? 0xe000 : last + 1); // surrogates are not characters in UTF-8
      return String.fromCodePoint(...cps);
    }
  }
  return undefined;
}

/** etcd's rule on bytes: increment the last byte below 0xff; all 0xff (or empty) gives [0], meaning "to the end". */
export function bytesPrefixEnd(prefix: Uint8Array): Uint8Array {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const end = prefix.slice(0, i + 1);
      end[i]!++;
      return end;
    }
  }
  return new Uint8Array([0]);
}
