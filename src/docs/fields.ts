/**
 * Flattens a zod schema into documented fields (dotted paths, type, default, required,
 * description) via zod's JSON Schema of the *input*: what people write in a manifest.
 */
import { z } from "zod";
import { isDurationSchema } from "../config/duration.ts";

type JsonSchema = z.core.JSONSchema.JSONSchema;

export interface Field {
  /** Dotted path; `[]` marks the items of a list, e.g. `ports[].name`. */
  path: string;
  type: string;
  default?: unknown;
  required: boolean;
  description: string;
}

/** Durations are strings in JSON Schema; tag them so the reference can say "duration". */
const DURATION_FORMAT = "mesh-duration";

export function inputSchema(schema: z.ZodType): JsonSchema {
  return z.toJSONSchema(schema, {
    io: "input",
    unrepresentable: "throw",
    override: (ctx) => {
      if (isDurationSchema(ctx.zodSchema)) ctx.jsonSchema.format = DURATION_FORMAT;
    },
  });
}

const asSchema = (s: z.core.JSONSchema._JSONSchema | undefined): JsonSchema => (typeof s === "object" ? s : {});

/** A number's bounds, leaving out the safe-integer limits every zod int carries. */
function range(s: JsonSchema): string {
  const min = s.minimum === Number.MIN_SAFE_INTEGER ? undefined : s.minimum;
  const max = s.maximum === Number.MAX_SAFE_INTEGER ? undefined : s.maximum;
  if (min !== undefined && max !== undefined) return ` ${min}–${max}`;
  if (min !== undefined) return ` ≥ ${min}`;
  if (max !== undefined) return ` ≤ ${max}`;
  return "";
}

/** A readable type: `string`, `integer 1–65535`, `` `a` | `b` ``, `list of duration`, `map of string`. */
export function typeName(s: JsonSchema): string {
  if (s.$ref) throw new Error(`cannot document a $ref (${s.$ref}): inline the schema`);
  const union = s.anyOf ?? s.oneOf;
  if (union) return union.map(typeName).join(" or ");
  if (s.const !== undefined) return `\`${String(s.const)}\``;
  if (s.enum) return s.enum.map((v) => `\`${String(v)}\``).join(" | ");
  if (s.format === DURATION_FORMAT) return "duration";
  switch (s.type) {
    case "integer":
    case "number":
      return s.type + range(s);
    case "array": {
      const min = s.minItems ? ` (at least ${s.minItems})` : "";
      return `list of ${typeName(asSchema(s.items as z.core.JSONSchema._JSONSchema))}${min}`;
    }
    case "object":
      return s.properties || s.additionalProperties === false ? "object" : `map of ${typeName(asSchema(s.additionalProperties))}`;
    case undefined:
      return "any";
    default:
      return Array.isArray(s.type) ? s.type.join(" or ") : s.type;
  }
}

/** Every field of an object schema, parents before their children. */
export function fields(s: JsonSchema, prefix = ""): Field[] {
  const required = new Set(s.required ?? []);
  return Object.entries(s.properties ?? {}).flatMap(([name, raw]) => {
    const prop = asSchema(raw);
    const path = prefix + name;
    const field: Field = { path, type: typeName(prop), required: required.has(name), description: prop.description ?? "" };
    if (prop.default !== undefined) field.default = prop.default;
    const items = prop.type === "array" ? asSchema(prop.items as z.core.JSONSchema._JSONSchema) : undefined;
    const children = prop.properties ? fields(prop, `${path}.`) : items?.properties ? fields(items, `${path}[].`) : [];
    return [field, ...children];
  });
}
