/**
 * Manifest bytes to text, strictly. A lenient decode turns every byte that is not UTF-8
 * (a Latin-1 "é", a UTF-16 file) into U+FFFD and the file is served with it; here such a
 * file is refused, naming the first bad byte. A UTF-8 byte order mark is accepted (and
 * dropped): some editors write one.
 */

export type DecodedText = { ok: true; text: string } | { ok: false; message: string };

const strict = new TextDecoder("utf-8", { fatal: true });

export function decodeUtf8(bytes: Uint8Array): DecodedText {
  const utf16 = utf16Kind(bytes);
  if (utf16) return { ok: false, message: `is UTF-16 (${utf16}); save it as UTF-8` };
  try {
    return { ok: true, text: strict.decode(bytes) };
  } catch {
    const at = firstInvalidByte(bytes);
    const byte = bytes[at]?.toString(16).toUpperCase().padStart(2, "0");
    return { ok: false, message: `not valid UTF-8: byte 0x${byte} at byte offset ${at} (line ${lineAt(bytes, at)})` };
  }
}

/** UTF-16 starts with its byte order mark (where it has none, its NUL bytes fail the parse). */
function utf16Kind(bytes: Uint8Array): string | undefined {
  if (bytes[0] === 0xff && bytes[1] === 0xfe) return "little-endian, byte order mark FF FE";
  if (bytes[0] === 0xfe && bytes[1] === 0xff) return "big-endian, byte order mark FE FF";
  return undefined;
}

/**
 * Where the first sequence that is not UTF-8 starts: a stray continuation byte, a lead byte
 * without its continuation, an overlong form, a surrogate, or past U+10FFFF (RFC 3629).
 * Only called once the decoder has refused the bytes, so -1 is not expected.
 */
export function firstInvalidByte(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i]!;
    if (lead < 0x80) {
      i++;
      continue;
    }
    // How many continuation bytes follow, and the range the first of them must be in.
    let count: number;
    let low = 0x80;
    let high = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf) count = 1;
    else if (lead >= 0xe0 && lead <= 0xef) {
      count = 2;
      if (lead === 0xe0) low = 0xa0; // overlong
      if (lead === 0xed) high = 0x9f; // surrogates
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      count = 3;
      if (lead === 0xf0) low = 0x90; // overlong
      if (lead === 0xf4) high = 0x8f; // past U+10FFFF
    } else return i;
    for (let k = 1; k <= count; k++) {
      const next = bytes[i + k];
      if (next === undefined || next < (k === 1 ? low : 0x80) || next > (k === 1 ? high : 0xbf)) return i;
    }
    i += count + 1;
  }
  return -1;
}

function lineAt(bytes: Uint8Array, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset; i++) if (bytes[i] === 0x0a) line++;
  return line;
}
