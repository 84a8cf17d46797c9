/**
 * A strict reader for the DER subset X.509 certificates use. It reads in place (offsets
 * into one buffer, no copies) and throws DerError on anything that is not well-formed
 * DER: indefinite or non-minimal lengths, high tag numbers, a value running past its
 * parent, trailing bytes. Certificates reach it from peers, so every length is checked
 * against the bytes that are actually there before it is used.
 */

export class DerError extends Error {
  override name = "DerError";
}

/** One TLV: `tag` is the identifier octet; the value is bytes [body, end). */
export interface Tlv {
  tag: number;
  start: number;
  body: number;
  end: number;
}

export const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  utf8String: 0x0c,
  printableString: 0x13,
  teletexString: 0x14,
  ia5String: 0x16,
  utcTime: 0x17,
  generalizedTime: 0x18,
  universalString: 0x1c,
  bmpString: 0x1e,
  sequence: 0x30,
  set: 0x31,
} as const;

/** Context-specific tag [n]: constructed (EXPLICIT, or IMPLICIT of a constructed type) or primitive. */
export const contextTag = (n: number, constructed: boolean): number => (constructed ? 0xa0 : 0x80) | n;

/** Reads the TLV at `at`, which must end by `limit`. */
export function readTlv(buf: Uint8Array, at: number, limit: number): Tlv {
  if (at + 2 > limit) throw new DerError(`truncated element at byte ${at}`);
  const tag = buf[at]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`high tag number at byte ${at}`);
  let length = buf[at + 1]!;
  let body = at + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0) throw new DerError(`indefinite length at byte ${at}`);
    if (count > 4) throw new DerError(`length of ${count} bytes at byte ${at}`);
    if (body + count > limit) throw new DerError(`truncated length at byte ${at}`);
    if (buf[body] === 0) throw new DerError(`non-minimal length at byte ${at}`);
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + buf[body + i]!;
    if (length < 0x80) throw new DerError(`non-minimal length at byte ${at}`);
    body += count;
  }
  const end = body + length;
  if (end > limit) throw new DerError(`element at byte ${at} runs past its container`);
  return { tag, start: at, body, end };
}

/** The element at `at` with the expected tag. */
export function expect(buf: Uint8Array, at: number, limit: number, tag: number, what: string): Tlv {
  const tlv = readTlv(buf, at, limit);
  if (tlv.tag !== tag) throw new DerError(`${what}: expected tag 0x${hex2(tag)}, found 0x${hex2(tlv.tag)} at byte ${at}`);
  return tlv;
}

/** The elements that exactly fill a constructed element's value. */
export function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  if (!(parent.tag & 0x20)) throw new DerError(`element at byte ${parent.start} is not constructed`);
  const out: Tlv[] = [];
  for (let at = parent.body; at < parent.end; ) {
    const tlv = readTlv(buf, at, parent.end);
    out.push(tlv);
    at = tlv.end;
  }
  return out;
}

/** A whole buffer that must hold exactly one element. */
export function readRoot(buf: Uint8Array, tag: number, what: string): Tlv {
  const tlv = expect(buf, 0, buf.length, tag, what);
  if (tlv.end !== buf.length) throw new DerError(`${what}: ${buf.length - tlv.end} trailing bytes`);
  return tlv;
}

export function readOid(buf: Uint8Array, tlv: Tlv): string {
  if (tlv.tag !== TAG.oid) throw new DerError(`expected an OBJECT IDENTIFIER at byte ${tlv.start}`);
  if (tlv.body === tlv.end) throw new DerError(`empty OBJECT IDENTIFIER at byte ${tlv.start}`);
  const arcs: number[] = [];
  let value = 0;
  for (let i = tlv.body; i < tlv.end; i++) {
    const byte = buf[i]!;
    if (value === 0 && byte === 0x80) throw new DerError(`non-minimal OBJECT IDENTIFIER arc at byte ${i}`);
    value = value * 128 + (byte & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) throw new DerError(`OBJECT IDENTIFIER arc too large at byte ${i}`);
    if (byte & 0x80) continue;
    if (arcs.length === 0) arcs.push(value < 80 ? Math.floor(value / 40) : 2, value < 80 ? value % 40 : value - 80);
    else arcs.push(value);
    value = 0;
  }
  if (buf[tlv.end - 1]! & 0x80) throw new DerError(`truncated OBJECT IDENTIFIER at byte ${tlv.start}`);
  return arcs.join(".");
}

export function readBoolean(buf: Uint8Array, tlv: Tlv): boolean {
  if (tlv.tag !== TAG.boolean || tlv.end - tlv.body !== 1) throw new DerError(`expected a BOOLEAN at byte ${tlv.start}`);
  const v = buf[tlv.body];
  if (v === 0x00) return false;
  if (v === 0xff) return true;
  throw new DerError(`BOOLEAN that is neither 0x00 nor 0xFF at byte ${tlv.start}`);
}

/** The bytes of a minimally encoded INTEGER (two's complement, big-endian). */
export function integerBytes(buf: Uint8Array, tlv: Tlv, tag: number = TAG.integer): Uint8Array {
  if (tlv.tag !== tag || tlv.end === tlv.body) throw new DerError(`expected an INTEGER at byte ${tlv.start}`);
  if (tlv.end - tlv.body > 1) {
    const a = buf[tlv.body]!;
    const b = buf[tlv.body + 1]!;
    if ((a === 0x00 && !(b & 0x80)) || (a === 0xff && b & 0x80)) throw new DerError(`non-minimal INTEGER at byte ${tlv.start}`);
  }
  return buf.subarray(tlv.body, tlv.end);
}

/** A non-negative INTEGER small enough for a JS number (path lengths, versions). */
export function readSmallInt(buf: Uint8Array, tlv: Tlv): number {
  const bytes = integerBytes(buf, tlv);
  if (bytes[0]! & 0x80) throw new DerError(`negative INTEGER at byte ${tlv.start}`);
  if (bytes.length > 6) throw new DerError(`INTEGER too large at byte ${tlv.start}`);
  let n = 0;
  for (const byte of bytes) n = n * 256 + byte;
  return n;
}

/** A BIT STRING's bytes and its count of unused trailing bits. */
export function readBitString(buf: Uint8Array, tlv: Tlv): { bytes: Uint8Array; unused: number } {
  if (tlv.tag !== TAG.bitString || tlv.end === tlv.body) throw new DerError(`expected a BIT STRING at byte ${tlv.start}`);
  const unused = buf[tlv.body]!;
  const bytes = buf.subarray(tlv.body + 1, tlv.end);
  if (unused > 7 || (unused > 0 && bytes.length === 0)) throw new DerError(`malformed BIT STRING at byte ${tlv.start}`);
  if (unused && bytes[bytes.length - 1]! & ((1 << unused) - 1)) throw new DerError(`BIT STRING with set padding bits at byte ${tlv.start}`);
  return { bytes, unused };
}

const TIME = /^(\d{2}|\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/;

/** UTCTime (YYMMDDHHMMSSZ, years 1950–2049) or GeneralizedTime (YYYYMMDDHHMMSSZ), as RFC 5280 §4.1.2.5 requires. */
export function readTime(buf: Uint8Array, tlv: Tlv): Date {
  const text = ascii(buf, tlv);
  const m = TIME.exec(text);
  const yearDigits = tlv.tag === TAG.utcTime ? 2 : tlv.tag === TAG.generalizedTime ? 4 : 0;
  if (!m || m[1]!.length !== yearDigits) throw new DerError(`malformed time "${text}" at byte ${tlv.start}`);
  let year = Number(m[1]);
  if (yearDigits === 2) year += year < 50 ? 2000 : 1900;
  const [month, day, hour, minute, second] = [m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number];
  const date = new Date(Date.UTC(2000, month - 1, day, hour, minute, second));
  date.setUTCFullYear(year); // Date.UTC would read years 0–99 as 1900–1999
  if (date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59)
    throw new DerError(`impossible time "${text}" at byte ${tlv.start}`);
  return date;
}

/** The value as text of 7-bit bytes only (IA5String and the like); throws on anything else. */
export function ascii(buf: Uint8Array, tlv: Tlv): string {
  let text = "";
  for (let i = tlv.body; i < tlv.end; i++) {
    const byte = buf[i]!;
    if (byte > 0x7f) throw new DerError(`non-ASCII byte in a string at byte ${i}`);
    text += String.fromCharCode(byte);
  }
  return text;
}

export const hex = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");

const hex2 = (n: number) => n.toString(16).padStart(2, "0");
