/**
 * An answer's body read up to a byte cap. res.text() takes whatever is sent before
 * anything can be checked, so an answer of any size (a broken or hostile control plane,
 * or something in its place) would be held whole in the sidecar's memory.
 */

export class AnswerTooLarge extends Error {
  override readonly name = "AnswerTooLarge";
}

/** The body as text; past `maxBytes` (said by Content-Length, or counted as it arrives) the rest is cancelled unread. */
export async function boundedText(res: Response, maxBytes: number, what: string): Promise<string> {
  const tooLarge = (size: string) => new AnswerTooLarge(`${what}: the answer is ${size}; at most ${mib(maxBytes)} is read`);
  const length = Number(res.headers.get("content-length") ?? 0);
  if (length > maxBytes) {
    await res.body?.cancel().catch(() => {});
    throw tooLarge(`${length} bytes`);
  }
  if (res.body === null) return "";
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let read = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    read += value.byteLength;
    if (read > maxBytes) {
      await reader.cancel().catch(() => {});
      throw tooLarge(`past ${mib(maxBytes)}`);
    }
    parts.push(value);
  }
  return Buffer.concat(parts).toString("utf8");
}

const mib = (bytes: number) => (bytes >= 1 << 20 ? `${bytes / (1 << 20)} MiB` : `${bytes} bytes`);
