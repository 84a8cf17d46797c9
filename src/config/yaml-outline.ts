/**
 * A light reading of a YAML document's structure, for two things Bun.YAML.parse does not
 * tell: a mapping that repeats a key (the parser keeps the last one without a word), and
 * the line ends where no flow collection or quoted scalar is open, where a prefix of the
 * document can end and still parse (so a syntax error can be bisected to its line).
 *
 * It follows indentation, `- ` entries, flow brackets, quotes, comments and block scalars,
 * in one pass, and never fails; the grammar is the parser's to check, so duplicates are
 * only to be trusted in a document that parsed. Keys compare as the text they are written
 * as (unquoted), as the parser's object keys do. After a complex key (`? `) it stops
 * looking for duplicates rather than guess.
 */
import { formatPath } from "./issues";

export interface DuplicateKey {
  /** The mapping's dotted path (`spec.ports[0]`), "" for the document itself. */
  readonly path: string;
  /** The same path as keys and indexes. */
  readonly keys: readonly (string | number)[];
  readonly key: string;
  /** 1-based lines of the text read: where the key is repeated, and where it first was. */
  readonly line: number;
  readonly firstLine: number;
}

export interface YamlOutline {
  /** Line counts, ascending from 0, after which no flow collection or quoted scalar is open. */
  readonly cuts: number[];
  readonly duplicates: DuplicateKey[];
}

export function outlineYaml(lines: readonly string[]): YamlOutline {
  return new Outliner().read(lines);
}

/** A node's place, as a chain up to the document: shared, not copied, so deep nesting costs no more per level. */
type Path = { readonly parent: Path; readonly key: string | number } | undefined;

const child = (parent: Path, key: string | number): Path => ({ parent, key });

function pathKeys(path: Path): (string | number)[] {
  const keys: (string | number)[] = [];
  for (let p = path; p !== undefined; p = p.parent) keys.push(p.key);
  return keys.reverse();
}

/** A mapping or sequence of block style, by the column its keys or dashes are at. */
interface BlockNode {
  readonly kind: "map" | "seq";
  readonly indent: number;
  readonly path: Path;
  readonly keys: Map<string, number>;
  items: number;
}

/** A `{…}` or `[…]` collection. */
interface FlowNode {
  readonly kind: "map" | "seq";
  readonly path: Path;
  readonly keys: Map<string, number>;
  items: number;
  /** In a mapping: the next scalar is a key (at its start, and after each comma). */
  expectKey: boolean;
  key?: string;
}

/** Characters a plain scalar cannot start with (YAML 1.2, c-indicator). */
const INDICATORS = "-?:,[]{}#&*!|>'\"%@`";
const MERGE_KEY = "<<";
/** From lastIndex on, nothing but white space or a comment. */
const BLANK_FROM = /\s*(?:#|$)/y;

class Outliner {
  private readonly block: BlockNode[] = [];
  private readonly flow: FlowNode[] = [];
  /** Inside a quoted scalar that goes on past its line: its quote. */
  private quote: string | undefined;
  /** Inside a block scalar (`|`, `>`): lines indented more than this are its content. */
  private scalarParent: number | undefined;
  /** Where a node that starts on a later, deeper line belongs. */
  private pending: Path = undefined;
  private complexKey = false;
  private readonly cuts: number[] = [0];
  private readonly duplicates: DuplicateKey[] = [];

  read(lines: readonly string[]): YamlOutline {
    lines.forEach((text, line) => {
      this.line(text, line);
      if (this.flow.length === 0 && this.quote === undefined) this.cuts.push(line + 1);
    });
    return { cuts: this.cuts, duplicates: this.complexKey ? [] : this.duplicates };
  }

  private line(text: string, line: number): void {
    if (this.quote !== undefined || this.flow.length > 0) return this.inline(text, 0, line);
    const indent = leadingSpaces(text);
    BLANK_FROM.lastIndex = indent;
    const blank = BLANK_FROM.test(text);
    if (this.scalarParent !== undefined) {
      if (blank || indent > this.scalarParent) return;
      this.scalarParent = undefined;
    }
    if (blank || text.startsWith("%") || /^\.\.\.(?:\s|$)/.test(text)) return;
    if (/^---(?:\s|$)/.test(text)) {
      this.block.length = 0;
      return this.value(text, 3, line, -1, undefined);
    }
    this.node(text, indent, line);
  }

  /** A block line's content from `col`: `- ` entries, then a key and its value, or a value. */
  private node(text: string, col: number, line: number): void {
    let parent = col - 1;
    while (isEntry(text, col)) {
      this.pending = this.entry(col);
      parent = col;
      col = skipSpaces(text, col + 1);
    }
    col = skipProperties(text, col);
    if (text[col] === "?" && isSpaceOrEnd(text[col + 1])) this.complexKey = true;
    const key = readKey(text, col);
    if (key === undefined) return this.value(text, col, line, parent, this.pending);
    this.value(text, key.end, line, col, this.mapKey(col, key.name, line));
  }

  private entry(dash: number): Path {
    this.closeDeeperThan(dash);
    let top = this.block.at(-1);
    if (top?.kind !== "seq" || top.indent !== dash) {
      top = { kind: "seq", indent: dash, path: this.pending, keys: new Map(), items: 0 };
      this.block.push(top);
    }
    return child(top.path, top.items++);
  }

  private mapKey(col: number, key: string, line: number): Path {
    this.closeDeeperThan(col);
    let top = this.block.at(-1);
    // A sequence at its mapping's indent (`key:\n- a`) ends at the mapping's next key.
    if (top?.kind === "seq" && top.indent === col && this.block.at(-2)?.indent === col) {
      this.block.pop();
      top = this.block.at(-1);
    }
    if (top?.kind !== "map" || top.indent !== col) {
      top = { kind: "map", indent: col, path: this.pending, keys: new Map(), items: 0 };
      this.block.push(top);
    }
    this.record(top.keys, top.path, key, line);
    return child(top.path, key);
  }

  private closeDeeperThan(col: number): void {
    while ((this.block.at(-1)?.indent ?? -1) > col) this.block.pop();
  }

  /** A node's value from `from`; a block scalar's content is indented more than `parent`. */
  private value(text: string, from: number, line: number, parent: number, path: Path): void {
    this.pending = path;
    const at = skipProperties(text, skipSpaces(text, from));
    const c = text[at];
    if (c === "|" || c === ">") this.scalarParent = parent;
    else if (c === "[" || c === "{") {
      this.open(c, path);
      this.inline(text, at + 1, line);
    } else if (c === '"' || c === "'") {
      if (closeQuote(text, at + 1, c) < 0) this.quote = c;
    }
    // Otherwise a plain scalar, an alias or nothing: no structure in it to follow.
  }

  private open(bracket: string, path: Path): void {
    this.flow.push({ kind: bracket === "{" ? "map" : "seq", path, keys: new Map(), items: 0, expectKey: bracket === "{" });
  }

  /** Flow collections and quoted scalars, which may go on over several lines. */
  private inline(text: string, from: number, line: number): void {
    let p = from;
    while (p < text.length) {
      if (this.quote !== undefined) {
        const end = closeQuote(text, p, this.quote);
        if (end < 0) return;
        this.quote = undefined;
        p = end;
      }
      const top = this.flow.at(-1);
      if (top === undefined) return; // the flow collection closed: the rest of the line is a comment
      const c = text[p]!;
      if (c === " " || c === "\t") p++;
      else if (c === "#" && (p === 0 || isSpace(text[p - 1]))) return;
      else if (c === "[" || c === "{") {
        this.open(c, child(top.path, top.kind === "map" ? (top.key ?? "") : top.items));
        top.expectKey = false;
        p++;
      } else if (c === "]" || c === "}") {
        this.flow.pop();
        p++;
      } else if (c === ",") {
        top.items++;
        top.expectKey = top.kind === "map";
        p++;
      } else if (c === ":") {
        top.expectKey = false;
        p++;
      } else if (c === '"' || c === "'") {
        const end = closeQuote(text, p + 1, c);
        if (end < 0) {
          this.quote = c; // a scalar over several lines: a value (keys are on one line)
          return;
        }
        this.scalar(top, unquote(text.slice(p, end)), line);
        p = end;
      } else if (c === "&" || c === "!") p = tokenEnd(text, p);
      else {
        const end = Math.max(plainEnd(text, p), p + 1);
        this.scalar(top, text.slice(p, end).trimEnd(), line);
        p = end;
      }
    }
  }

  private scalar(top: FlowNode, value: string, line: number): void {
    if (top.kind !== "map" || !top.expectKey) return;
    this.record(top.keys, top.path, value, line);
    top.key = value;
    top.expectKey = false;
  }

  private record(keys: Map<string, number>, path: Path, key: string, line: number): void {
    if (key === MERGE_KEY) return;
    const first = keys.get(key);
    if (first === undefined) keys.set(key, line);
    else {
      const keys = pathKeys(path);
      this.duplicates.push({ path: formatPath(keys), keys, key, line: line + 1, firstLine: first + 1 });
    }
  }
}

/** An implicit key at `col` (`name:`, `"name":`), and where its value starts. */
function readKey(text: string, col: number): { name: string; end: number } | undefined {
  const c = text[col];
  if (c === '"' || c === "'") {
    const end = closeQuote(text, col + 1, c);
    const colon = end < 0 ? -1 : skipSpaces(text, end);
    return colon >= 0 && text[colon] === ":" ? { name: unquote(text.slice(col, end)), end: colon + 1 } : undefined;
  }
  if (c === undefined || (INDICATORS.includes(c) && !("-?:".includes(c) && !isSpaceOrEnd(text[col + 1])))) return undefined;
  for (let p = col; p < text.length; p++) {
    if (text[p] === ":" && isSpaceOrEnd(text[p + 1])) return { name: text.slice(col, p).trimEnd(), end: p + 1 };
    if (text[p] === "#" && isSpace(text[p - 1])) return undefined;
  }
  return undefined;
}

/** Where a plain scalar in a flow collection ends: at `,[]{}`, `: `, ` #` or the line's end. */
function plainEnd(text: string, from: number): number {
  for (let p = from; p < text.length; p++) {
    const c = text[p]!;
    if (",[]{}".includes(c)) return p;
    if (c === ":" && (isSpaceOrEnd(text[p + 1]) || ",[]{}".includes(text[p + 1]!))) return p;
    if (c === "#" && isSpace(text[p - 1])) return p;
  }
  return text.length;
}

/** The index after the closing quote, or -1 when the scalar goes on past this line. */
function closeQuote(text: string, from: number, quote: string): number {
  for (let p = from; p < text.length; p++) {
    const c = text[p];
    if (quote === '"' && c === "\\") p++;
    else if (c === quote) {
      if (quote === "'" && text[p + 1] === "'") p++;
      else return p + 1;
    }
  }
  return -1;
}

/** A quoted scalar's value, with quotes and (for JSON-compatible ones) escapes undone. */
function unquote(quoted: string): string {
  const inner = quoted.slice(1, -1);
  if (quoted[0] === "'") return inner.replaceAll("''", "'");
  try {
    return JSON.parse(quoted) as string;
  } catch {
    return inner; // a YAML-only escape (`\x41`): compared as written
  }
}

function skipProperties(text: string, from: number): number {
  let p = from;
  while (text[p] === "&" || text[p] === "!") p = skipSpaces(text, tokenEnd(text, p));
  return p;
}

function tokenEnd(text: string, from: number): number {
  let p = from;
  while (p < text.length && !isSpace(text[p]) && !",[]{}".includes(text[p]!)) p++;
  return p;
}

function isEntry(text: string, col: number): boolean {
  return text[col] === "-" && isSpaceOrEnd(text[col + 1]);
}

function leadingSpaces(text: string): number {
  let n = 0;
  while (text[n] === " ") n++;
  return n;
}

function skipSpaces(text: string, from: number): number {
  let p = from;
  while (isSpace(text[p])) p++;
  return p;
}

function isSpace(c: string | undefined): boolean {
  return c === " " || c === "\t";
}

function isSpaceOrEnd(c: string | undefined): boolean {
  return c === undefined || isSpace(c);
}
