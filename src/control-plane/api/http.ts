/** Request-body parsing and error answers shared by the control plane's APIs. */
import type { Context } from "hono";
import type { z } from "zod";
import { check } from "../../config/issues.ts";
import { RegistryError } from "../registry.ts";
import { NO_SPACE_REMEDY, StoreError } from "../../store/errors.ts";
import { cappedText } from "../../core/capped-body.ts";

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

/** The body as text, refused past MAX_BODY (core/capped-body.ts): a client cannot have the whole of a huge body read first. */
function boundedText(req: Request): Promise<string> {
  return cappedText(req, MAX_BODY, (declared) => new BadRequest(declared === undefined ? `body is past ${MAX_BODY} bytes; at most ${MAX_BODY}` : `body is ${declared} bytes; at most ${MAX_BODY}`));
}

/** Maps the errors handlers throw to statuses; anything unexpected is a 500 without internals. */
export function onError(err: Error, c: Context): Response {
  if (err instanceof BadRequest) return c.json({ error: err.message }, 400);
  if (err instanceof RegistryError) return c.json({ error: err.message }, err.status);
  if (err.name === "DataError") return c.json({ error: err.message }, 400);
  // 507, not 503: the store answered and refused for good; another replica would be refused the same (a sidecar fails over on 503).
  if (err instanceof StoreError && err.code === "no-space") return c.json({ error: `store out of space, nothing written: ${err.message}; ${NO_SPACE_REMEDY}` }, 507);
  if (err instanceof StoreError) {
    const outage = err.code === "unavailable" || err.code === "closed";
    return c.json({ error: `store ${outage ? "unavailable" : "refused the request"}: ${err.message}` }, outage ? 503 : 500);
  }
  return c.json({ error: "internal error" }, 500);
}
