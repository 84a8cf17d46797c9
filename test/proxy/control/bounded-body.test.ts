/** An answer's body is read up to a cap, and the rest is never read. */
import { expect, test } from "bun:test";
import { AnswerTooLarge, boundedText } from "../../../src/proxy/control/bounded-body.ts";

test("a body within the cap is read whole", async () => {
  expect(await boundedText(new Response('{"ok":true}'), 100, "/v1/x")).toBe('{"ok":true}');
  expect(await boundedText(new Response(null, { status: 204 }), 100, "/v1/x")).toBe("");
});

test("a body past the cap, streamed without a length, is refused once the cap is passed and the stream cancelled", async () => {
  let pulled = 0;
  let cancelled = false;
  const stream = new ReadableStream({
    pull(c) {
      pulled++;
      c.enqueue(new Uint8Array(1024));
    },
    cancel() {
      cancelled = true;
    },
  });
  const read = boundedText(new Response(stream), 10 * 1024, "/v1/config");
  await expect(read).rejects.toBeInstanceOf(AnswerTooLarge);
  expect(cancelled).toBe(true);
  expect(pulled).toBeLessThan(20);
});

test("a Content-Length past the cap is refused before any of it is read", async () => {
  const res = new Response("x".repeat(2048), { headers: { "content-length": "2048" } });
  await expect(boundedText(res, 1024, "/v1/config")).rejects.toThrow("/v1/config: the answer is 2048 bytes; at most 1024 bytes is read");
});
