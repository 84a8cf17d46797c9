/**
 * PEM (RFC 7468) blocks in and out. Decoding is strict about the blocks it finds:
 * every BEGIN line needs an END line with the same label, and the body between must
 * be base64 and nothing else, so a file cut short or corrupted is refused rather than
 * half-read. Text outside blocks (prose, comments) is skipped, as openssl does.
 */
export interface PemBlock {
  type: string;
  der: Uint8Array<ArrayBuffer>;
  /** The line of its BEGIN boundary, from 1. */
  line: number;
}

/** An encapsulation boundary; a label is printable ASCII without '-' (RFC 7468 §3). */
const BOUNDARY = /-----(BEGIN|END) ([\x21-\x2c\x2e-\x7e ]+)-----/g;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/** RFC 1421 headers (a legacy encrypted key's Proc-Type and DEK-Info), ended by a blank line. */
const HEADERS = /^\s*[A-Za-z][A-Za-z0-9-]*:[^]*?\n[ \t\r]*\n/;

export function decodePem(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  let open: { type: string; at: number; bodyStart: number } | undefined;
  const name = (b: { type: string; at: number }) => `PEM block "${b.type}" at line ${lineOf(text, b.at)}`;
  for (const m of text.matchAll(BOUNDARY)) {
    const [marker, kind, label] = m as unknown as [string, "BEGIN" | "END", string];
    if (kind === "BEGIN") {
      if (open) throw new Error(`${name(open)} has no END line before the next BEGIN line (truncated?)`);
      open = { type: label, at: m.index, bodyStart: m.index + marker.length };
      continue;
    }
    if (!open) throw new Error(`the END line "${label}" at line ${lineOf(text, m.index)} has no BEGIN line`);
    if (label !== open.type) throw new Error(`${name(open)} ends with "${label}"`);
    const b64 = text.slice(open.bodyStart, m.index).replace(HEADERS, "").replace(/\s+/g, "");
    if (!BASE64.test(b64) || b64.length % 4 !== 0) throw new Error(`${name(open)} is not valid base64`);
    blocks.push({ type: open.type, der: new Uint8Array(Buffer.from(b64, "base64")), line: lineOf(text, open.at) });
    open = undefined;
  }
  if (open) throw new Error(`${name(open)} has no END line (truncated?)`);
  return blocks;
}

function lineOf(text: string, index: number): number {
  let line = 1;
  for (let i = text.indexOf("\n"); i !== -1 && i < index; i = text.indexOf("\n", i + 1)) line++;
  return line;
}

/** One block, 64 base64 characters a line, ending with a newline. */
export function encodePem(type: string, der: Uint8Array | ArrayBuffer): string {
  const bytes = der instanceof Uint8Array ? der : new Uint8Array(der);
  const b64 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${type}-----\n${lines.join("\n")}\n-----END ${type}-----\n`;
}
