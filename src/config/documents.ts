/**
 * Splits a manifest file into documents. YAML is split on `---` lines here rather than
 * by Bun.YAML.parse, because Bun returns an array for both a multi-document file and a
 * single document that is a list, and because a syntax error in one document should not
 * hide the others. A JSON file holds one object or an array of them.
 */

export type RawDocument =
  | { readonly index: number; readonly value: unknown }
  | { readonly index: number; readonly error: string };

/** Either the documents, or why the file as a whole could not be read as documents. */
export type SplitResult = { ok: true; docs: RawDocument[] } | { ok: false; error: string };

const MARKER = /^---(?:[ \t]|$)/;
/** Lines that carry no content: blank, comments, directives (%YAML). */
const NO_CONTENT = /^(?:\s*(?:#.*)?|%.*)$/;

function isJsonFile(file: string): boolean {
  return file.toLowerCase().endsWith(".json");
}

export function splitDocuments(text: string, file: string): SplitResult {
  const body = text.startsWith("\uFEFF") ? text.slice(1) : text;
  return isJsonFile(file) ? splitJson(body) : { ok: true, docs: splitYaml(body) };
}

function splitJson(text: string): SplitResult {
  if (text.trim() === "") return { ok: true, docs: [] };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `invalid JSON: ${stripPrefix((err as Error).message, "JSON Parse error: ")}` };
  }
  const values = Array.isArray(value) ? value : [value];
  return { ok: true, docs: values.map((v, index) => ({ index, value: v })) };
}

function splitYaml(text: string): RawDocument[] {
  const lines = text.split(/\r?\n/);
  const starts: number[] = [];
  lines.forEach((line, i) => {
    if (MARKER.test(line)) starts.push(i);
  });
  // Text before the first `---` is a document only if it has content (a leading `---` is common).
  if (starts[0] !== 0 && lines.slice(0, starts[0] ?? lines.length).some((l) => !NO_CONTENT.test(l))) starts.unshift(0);
  return starts.map((start, index) => {
    const chunk = lines.slice(start, starts[index + 1] ?? lines.length);
    try {
      return { index, value: Bun.YAML.parse(chunk.join("\n")) };
    } catch (err) {
      const reason = stripPrefix((err as Error).message, "YAML Parse error: ");
      const line = errorLine(chunk);
      return { index, error: `YAML syntax error${line ? ` at line ${start + line}` : ""}: ${reason}` };
    }
  });
}

/**
 * Bun's YAML errors carry no position, so find it: the error is on the line after the
 * longest prefix that parses and after which every longer prefix fails. Scanning from the
 * end keeps a multi-line flow collection (`[` ... `]`) before the error from being blamed.
 */
function errorLine(chunk: string[]): number | undefined {
  for (let n = chunk.length - 1; n >= 0; n--) {
    try {
      Bun.YAML.parse(chunk.slice(0, n).join("\n"));
      return n + 1;
    } catch {
      // Still failing: the error is at or before line n.
    }
  }
  return undefined;
}

function stripPrefix(text: string, prefix: string): string {
  return text.startsWith(prefix) ? text.slice(prefix.length) : text;
}
