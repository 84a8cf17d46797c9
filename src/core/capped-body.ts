/**
 * A request's or response's body read as text up to a byte cap. text() takes whatever is
 * sent before anything can be checked, so a body of any size would be held whole first.
 * Refused at once when its Content-Length says it is larger, else as soon as the bytes
 * read pass the cap (chunked, or a length that lied); the rest is cancelled unread.
 */

/** `declared`: the Content-Length that was too large; undefined when the bytes read passed the cap. */
export type TooLarge = (declared: number | undefined) => Error;

export async function cappedText(message: Request | Response, maxBytes: number, tooLarge: TooLarge): Promise<string> {
  const length = Number(message.headers.get("content-length") ?? 0);
  if (length > maxBytes) {
    await message.body?.cancel().catch(() => {});
    throw tooLarge(length);
  }
  if (message.body === null) return "";
  const reader = message.body.getReader();
  const parts: Uint8Array[] = [];
  let read = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    read += value.byteLength;
    if (read > maxBytes) {
      await reader.cancel().catch(() => {});
      throw tooLarge(undefined);
    }
    parts.push(value);
  }
  return Buffer.concat(parts).toString("utf8");
}
