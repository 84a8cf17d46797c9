/**
 * Turns zod issues into short, human messages ("required", "expected number ≥ 0",
 * `unknown field "weigth"`) with dotted paths (`spec.ports[1].name`). zod's defaults
 * ("Invalid input: expected number, received string") read like a stack trace.
 */
import { z } from "zod";
import { didYouMean } from "./suggest";

export interface Issue {
  /** Dotted path into the document, "" for the document itself. */
  readonly path: string;
  readonly message: string;
}

const TYPE_NAMES: Record<string, string> = { int: "integer", record: "object" };

export function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  return typeof value;
}

function bound(origin: string, limit: number | bigint, inclusive: boolean | undefined, small: boolean): string {
  switch (origin) {
    case "number":
    case "int":
      return `expected ${origin === "int" ? "integer" : "number"} ${small ? (inclusive ? "≥" : ">") : inclusive ? "≤" : "<"} ${limit}`;
    case "string":
      if (small && limit === 1) return "must not be empty";
      return `expected ${small ? "at least" : "at most"} ${limit} character${limit === 1 ? "" : "s"}`;
    case "array":
    case "set":
      if (small && limit === 1) return "expected at least 1 item";
      return `expected ${small ? "at least" : "at most"} ${limit} item${limit === 1 ? "" : "s"}`;
    default:
      return `expected ${small ? "at least" : "at most"} ${limit}`;
  }
}

/** Keys the object schema that raised an unrecognized_keys issue knows, for hints. */
function knownKeys(inst: unknown): string[] {
  const shape = (inst as { _zod?: { def?: { shape?: object } } } | undefined)?._zod?.def?.shape;
  return shape ? Object.keys(shape) : [];
}

/** zod reports bounds of `z.int()` with origin "number"; its format says integer. */
function boundOrigin(iss: { origin: string; schema?: unknown }): string {
  const format = (iss.schema as { _zod?: { def?: { format?: unknown } } } | undefined)?._zod?.def?.format;
  return typeof format === "string" && /int/.test(format) ? "int" : iss.origin;
}

/**
 * The contextual error map. Schema-level messages (refinements, `error:` params) still
 * win over it; it only replaces zod's built-in wording.
 */
export const errorMap: z.core.$ZodErrorMap = (iss) => {
  switch (iss.code) {
    case "invalid_type":
      if (iss.input === undefined) return "required";
      return `expected ${TYPE_NAMES[iss.expected] ?? iss.expected}, got ${typeName(iss.input)}`;
    case "too_small":
      return bound(boundOrigin(iss), iss.minimum, iss.inclusive, true);
    case "too_big":
      return bound(boundOrigin(iss), iss.maximum, iss.inclusive, false);
    case "invalid_value":
      return iss.values.length === 1
        ? `expected ${JSON.stringify(iss.values[0])}`
        : `expected one of ${iss.values.map(String).join(", ")}`;
    case "unrecognized_keys": {
      // One line per key; toIssues splits them so each unknown field is its own error.
      const known = knownKeys(iss.inst);
      return iss.keys.map((key) => `unknown field "${key}"${didYouMean(key, known)}`).join("\n");
    }
    case "invalid_format":
      return iss.format === "regex" ? "invalid format" : `expected ${iss.format}`;
    case "invalid_union":
      return "does not match any allowed form";
    case "invalid_key":
      return "invalid key";
    default:
      return undefined;
  }
};

/** `["spec", "ports", 0, "name"]` → `spec.ports[0].name`; odd keys are quoted. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else if (typeof key === "string" && /^[A-Za-z_$][\w$-]*$/.test(key)) out += out === "" ? key : `.${key}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

export function toIssues(error: z.ZodError): Issue[] {
  const out: Issue[] = [];
  for (const issue of error.issues) {
    const path = formatPath(issue.path);
    const messages = issue.code === "unrecognized_keys" ? issue.message.split("\n") : [issue.message];
    for (const message of messages) out.push({ path, message });
  }
  return out;
}

export type Checked<T> = { ok: true; value: T } | { ok: false; issues: Issue[] };

/** safeParse with the human error map, returning formatted issues. */
export function check<S extends z.ZodType>(schema: S, input: unknown): Checked<z.output<S>> {
  const result = schema.safeParse(input, { error: errorMap });
  return result.success ? { ok: true, value: result.data } : { ok: false, issues: toIssues(result.error) };
}
