/**
 * PEM (RFC 7468) blocks in and out. Decoding is strict about what it keeps: a block's
 * label must match at both ends and its body must be base64 and nothing else, so a
 * file that is not what it claims is refused rather than half-read.
 */
export interface PemBlock {
  type: string;
  der: Uint8Array<ArrayBuffer>;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([^-]*)-----END ([A-Z0-9 ]+)-----/g;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function decodePem(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) {
    const [, type, body, endType] = m as unknown as [string, string, string, string];
    if (type !== endType) throw new Error(`PEM block "${type}" ends with "${endType}"`);
    const b64 = body.replace(/\s+/g, "");
    if (!BASE64.test(b64) || b64.length % 4 !== 0) throw new Error(`PEM block "${type}" is not valid base64`);
    blocks.push({ type, der: new Uint8Array(Buffer.from(b64, "base64")) });
  }
  return blocks;
}

/** One block, 64 base64 characters a line, ending with a newline. */
export function encodePem(type: string, der: Uint8Array | ArrayBuffer): string {
  const bytes = der instanceof Uint8Array ? der : new Uint8Array(der);
  const b64 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${type}-----\n${lines.join("\n")}\n-----END ${type}-----\n`;
}
