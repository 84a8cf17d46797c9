/** The manifest reference: the envelope, then every registered kind and every field of its spec. */
import "../config/kinds/index.ts";
import { API_VERSION, kinds, Metadata, type KindDef } from "../config/manifest.ts";
import { fields, inputSchema, type Field } from "./fields.ts";
import { code, table, text } from "./markdown.ts";

/** A default as it would be written in YAML flow style: `5s`, `[502, 503, 504]`, `{}`. */
function yamlish(value: unknown): string {
  if (typeof value === "string") return value === "" || /^[\s[{]|[:#,\]}]|\s$/.test(value) ? JSON.stringify(value) : value;
  if (Array.isArray(value)) return `[${value.map(yamlish).join(", ")}]`;
  if (value !== null && typeof value === "object")
    return `{${Object.entries(value)
      .map(([k, v]) => `${k}: ${yamlish(v)}`)
      .join(", ")}}`;
  return String(value);
}

function fieldRow(f: Field): string[] {
  const shown = f.default !== undefined ? code(yamlish(f.default), true) : f.required ? "*required*" : "";
  return [code(f.path, true), f.type.replace(/\|/g, "\\|"), shown, text(f.description)];
}

export function fieldTable(all: Field[]): string {
  return table(["field", "type", "default", "description"], all.map(fieldRow));
}

export function kindFields(def: KindDef): Field[] {
  return fields(inputSchema(def.spec));
}

export function renderEnvelope(): string {
  const intro =
    `Every manifest is \`apiVersion: ${API_VERSION}\`, \`kind\` (one of the kinds below), \`metadata\` and \`spec\`; ` +
    "unknown fields are errors. `metadata`:";
  return [`#### Envelope`, intro, fieldTable(fields(inputSchema(Metadata), "metadata."))].join("\n\n");
}

export function renderKind(def: KindDef): string {
  return [`#### ${code(def.kind)}`, text(def.description), "`spec`:", fieldTable(kindFields(def))].join("\n\n");
}

export function renderKinds(): string {
  return [renderEnvelope(), ...kinds().map(renderKind)].join("\n\n");
}
