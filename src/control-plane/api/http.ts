/** Request-body parsing and error answers shared by the control plane's APIs. */
import type { Context } from "hono";
import type { z } from "zod";
import { check } from "../../config/issues.ts";
import { RegistryError } from "../registry.ts";
import { StoreError } from "../../store/errors.ts";

const MAX_BODY = 4 << 20;

export class BadRequest extends Error {}

/** The JSON body, validated; every problem named by field. */
export async function body<S extends z.ZodType>(c: Context, schema: S): Promise<z.output<S>> {
  const text = await boundedText(c.req.raw);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new BadRequest("body is not JSON");
  }
  const result = check(schema, json);
  if (!result.ok) throw new BadRequest(result.issues.map((i) => `${i.path || "body"}: ${i.message}`).join("; "));
  return result.value as z.output<S>;
}

/**
 * The body as text, refused past MAX_BODY: at once when its Content-Length says so, and as
 * soon as the bytes read pass it when it comes chunked (without a length), so a client
 * cannot have the whole of a huge body read first.
 */
async function boundedText(req: Request): Promise<string> {
  const length = Number(req.headers.get("content-length") ?? 0);
  if (length > MAX_BODY) throw new BadRequest(`body is ${length} bytes; at most ${MAX_BODY}`);
  if (req.body === null) return "";
  const reader = req.body.getReader();
  const parts: Uint8Array[] = [];
  let read = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    read += value.byteLength;
    if (read > MAX_BODY) {
      void reader.cancel().catch(() => {});
      throw new BadRequest(`body is past ${MAX_BODY} bytes; at most ${MAX_BODY}`);
    }
    parts.push(value);
  }
  return Buffer.concat(parts).toString("utf8");
}

/** Maps the errors handlers throw to statuses; anything unexpected is a 500 without internals. */
export function onError(err: Error, c: Context): Response {
  if (err instanceof BadRequest) return c.json({ error: err.message }, 400);
  if (err instanceof RegistryError) return c.json({ error: err.message }, err.status);
  if (err.name === "DataError") return c.json({ error: err.message }, 400);
  if (err instanceof StoreError) {
    const outage = err.code === "unavailable" || err.code === "closed";
    return c.json({ error: `store ${outage ? "unavailable" : "refused the request"}: ${err.message}` }, outage ? 503 : 500);
  }
  return c.json({ error: "internal error" }, 500);
}
