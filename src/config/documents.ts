/**
 * Splits a manifest file into documents. YAML is split on `---` lines here rather than
 * by Bun.YAML.parse, because Bun returns an array for both a multi-document file and a
 * single document that is a list, and because a syntax error in one document should not
 * hide the others. A JSON file holds one object or an array of them.
 *
 * Bun.YAML.parse and JSON.parse keep the last of two equal keys and say nothing: a
 * document's repeated keys come back as its issues (yaml-outline.ts finds them).
 */
import { formatPath, type Issue } from "./issues";
import { jsonSyntaxError } from "./json-syntax";
import { outlineYaml } from "./yaml-outline";

export type RawDocument =
  | { readonly index: number; readonly value: unknown; readonly issues: readonly Issue[] }
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
    // Bun's message carries no position: the scan names the line and column (and its own reason, which points at the cause).
    const found = jsonSyntaxError(text);
    if (found === undefined) return { ok: false, error: `invalid JSON: ${stripPrefix((err as Error).message, "JSON Parse error: ")}` };
    return { ok: false, error: `invalid JSON at line ${found.line}, column ${found.column}: ${found.reason}` };
  }
  // JSON.parse keeps the last of two equal keys, as Bun.YAML.parse does; JSON is YAML's flow style, so the same outline finds them.
  const many = Array.isArray(value);
  const values: unknown[] = many ? (value as unknown[]) : [value];
  const issues = values.map((): Issue[] => []);
  for (const d of outlineYaml(text.split("\n")).duplicates) {
    const [doc, keys] = many ? [d.keys[0], d.keys.slice(1)] : [0, d.keys];
    if (typeof doc === "number") issues[doc]?.push(duplicateIssue(formatPath(keys), d.key, d.line, d.firstLine, 0));
  }
  return { ok: true, docs: values.map((v, index) => ({ index, value: v, issues: issues[index]! })) };
}

function duplicateIssue(path: string, key: string, line: number, firstLine: number, start: number): Issue {
  return { path, message: `duplicate key ${JSON.stringify(key)} at line ${start + line}${firstLine === line ? "" : ` (first at line ${start + firstLine})`}` };
}

function splitYaml(text: string): RawDocument[] {
  const lines = text.split(/\r?\n/);
  const starts: number[] = [];
  lines.forEach((line, i) => {
    if (MARKER.test(line)) starts.push(i);
  });
  // Text before the first `---` is a document only if it has content (a leading `---` is common).
  if (starts[0] !== 0 && lines.slice(0, starts[0] ?? lines.length).some((l) => !NO_CONTENT.test(l))) starts.unshift(0);
  return starts.map((start, index): RawDocument => {
    const chunk = lines.slice(start, starts[index + 1] ?? lines.length);
    const text = chunk.join("\n");
    let value: unknown;
    try {
      value = Bun.YAML.parse(text);
    } catch (err) {
      const reason = stripPrefix((err as Error).message, "YAML Parse error: ");
      return { index, error: `YAML syntax error${errorPlace(chunk, text, start)}: ${reason}` };
    }
    const issues = outlineYaml(chunk).duplicates.map(({ path, key, line, firstLine }) => duplicateIssue(path, key, line, firstLine, start));
    return { index, value, issues };
  });
}

/**
 * The characters parsed, in all, in search of one error's line: twice the largest manifest
 * file (manifest-file.ts), so a file at the limit stalls its reader about a second at worst.
 */
const ERROR_SEARCH_BUDGET = 8 << 20;

/**
 * Bun's YAML errors carry no position, so find it: the error is on the line after the
 * longest prefix that parses. Prefixes end only where no flow collection or quoted scalar
 * is open (a multi-line `[` … `]` before the error is not blamed), and are bisected:
 * about log2(lines) parses, not one per line, and no more characters than the budget
 * (past it, the lines the error is between). Lines count in the file, where the document
 * starts at line index `start`.
 */
function errorPlace(chunk: readonly string[], text: string, start: number): string {
  const cuts = outlineYaml(chunk).cuts.filter((n) => n < chunk.length);
  const lineEnds: number[] = [];
  for (let i = 0, at = -1; i < chunk.length; i++) lineEnds.push((at += chunk[i]!.length + 1));
  // Invariant: the prefix of cuts[good] lines parses (0 lines always do); the whole text fails.
  let good = 0;
  let bad = cuts.length;
  let spent = 0;
  const lineAfter = (i: number) => cuts[i]! + 1;
  while (bad - good > 1) {
    const mid = (good + bad) >>> 1;
    const prefix = text.slice(0, lineEnds[cuts[mid]! - 1] ?? 0);
    if (spent + prefix.length > ERROR_SEARCH_BUDGET) return ` between lines ${start + lineAfter(good)} and ${start + (cuts[bad] ?? chunk.length)}`;
    spent += prefix.length;
    if (parses(prefix)) good = mid;
    else bad = mid;
  }
  return ` at line ${start + lineAfter(good)}`;
}

function parses(text: string): boolean {
  try {
    Bun.YAML.parse(text);
    return true;
  } catch {
    return false;
  }
}

function stripPrefix(text: string, prefix: string): string {
  return text.startsWith(prefix) ? text.slice(prefix.length) : text;
}
