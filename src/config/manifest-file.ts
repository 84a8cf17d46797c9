/**
 * Reads one manifest file, refusing one larger than MAX_MANIFEST_FILE_BYTES before reading
 * it: a sidecar and a control plane read their files while they serve, and a file of tens
 * of MB would take seconds and a gigabyte to parse. The size is taken from the open file
 * and the read stops past the limit, so a file that grows meanwhile is refused too.
 */
import { open, type FileHandle } from "node:fs/promises";
import { decodeUtf8, type DecodedText } from "./utf8-text";
import { errnoMessage } from "./walk";

/** As much as the control plane's APIs take in one request body (control-plane/api/http.ts). */
export const MAX_MANIFEST_FILE_BYTES = 4 << 20;

/** The file's text, or why it is refused: `cannot read file: …`, too large, not UTF-8. */
export async function readManifestFile(file: string, limit = MAX_MANIFEST_FILE_BYTES): Promise<DecodedText> {
  let handle: FileHandle;
  try {
    handle = await open(file, "r");
  } catch (err) {
    return { ok: false, message: `cannot read file: ${errnoMessage(err)}` };
  }
  try {
    const { size } = await handle.stat();
    if (size > limit) return { ok: false, message: tooLarge(`${size} bytes (${mebibytes(size)})`, limit) };
    const bytes = await readAtMost(handle, limit, size);
    if (bytes.length > limit) return { ok: false, message: tooLarge(`more than ${limit} bytes (it grew while read)`, limit) };
    return decodeUtf8(bytes);
  } catch (err) {
    return { ok: false, message: `cannot read file: ${errnoMessage(err)}` };
  } finally {
    await handle.close();
  }
}

function tooLarge(size: string, limit: number): string {
  return `too large: ${size}; a manifest file may have at most ${limit} bytes (${mebibytes(limit)})`;
}

/** Rounded up to a tenth, so a file just over the limit never reads as at it. */
function mebibytes(bytes: number): string {
  return `${Math.ceil((bytes / (1 << 20)) * 10) / 10} MiB`;
}

/** Up to `limit` + 1 bytes (one more tells it went past), in a buffer sized by `expected`. */
async function readAtMost(handle: FileHandle, limit: number, expected: number): Promise<Uint8Array> {
  let buffer = new Uint8Array(Math.min(expected, limit) + 1);
  let length = 0;
  for (;;) {
    if (length === buffer.length) {
      if (length > limit) break;
      const bigger = new Uint8Array(Math.min(buffer.length * 2, limit + 1));
      bigger.set(buffer);
      buffer = bigger;
    }
    // From the current position, not an offset: a pipe (`mesh validate /dev/stdin`) has none.
    const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
    if (bytesRead === 0) break;
    length += bytesRead;
  }
  return buffer.subarray(0, length);
}
