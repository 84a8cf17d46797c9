/**
 * Where a JSON text breaks, and why. Bun's JSON.parse says what it disliked but not where
 * ("Unexpected token '}'"), so a text it refused is scanned again here, by the JSON grammar
 * (RFC 8259), for the first place it cannot go on. One pass, no recursion (a deeply nested
 * file cannot overflow the stack); run only on text JSON.parse already refused.
 */

export interface JsonSyntaxError {
  /** 1-based, as an editor counts: lines by "\n", columns in characters. */
  readonly line: number;
  readonly column: number;
  readonly reason: string;
}

type Want = "value" | "value-or-close" | "key" | "key-or-close" | "after-value";
type Open = { readonly close: "}" | "]"; readonly at: number };

const NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;
const ESCAPES = new Set(['"', "\\", "/", "b", "f", "n", "r", "t"]);

/** The first syntax error of `text`, or undefined if the grammar finds none. */
export function jsonSyntaxError(text: string): JsonSyntaxError | undefined {
  const found = firstError(text);
  return found && { ...placeOf(text, found.at), reason: found.reason };
}

function firstError(text: string): { at: number; reason: string } | undefined {
  const stack: Open[] = [];
  const fail = (at: number, reason: string) => ({ at, reason });
  const where = (open: Open) => {
    const p = placeOf(text, open.at);
    return `the '${open.close === "}" ? "{" : "["}' at line ${p.line}, column ${p.column}`;
  };
  /** A closer that is not the innermost's: name what it fails to close. */
  const misclosed = (at: number) => {
    const top = stack.at(-1);
    const c = text[at];
    return (c === "}" || c === "]") && top !== undefined && c !== top.close ? fail(at, `'${c}' does not close ${where(top)}`) : undefined;
  };
  let want: Want = "value";
  let i = 0;
  for (;;) {
    while (i < text.length && " \t\n\r".includes(text[i]!)) i++;
    const top = stack.at(-1);
    if (i >= text.length) {
      if (top !== undefined) return fail(i, `the file ends before ${where(top)} is closed`);
      return want === "after-value" ? undefined : fail(i, "the file ends where a value was expected");
    }
    const c = text[i]!;
    if (want === "after-value") {
      if (top === undefined) return fail(i, `text after the end of the JSON value: ${describe(text, i)}`);
      if (c === top.close) {
        stack.pop();
        i++;
      } else if (c === ",") {
        const comma = i++;
        while (i < text.length && " \t\n\r".includes(text[i]!)) i++;
        if (text[i] === top.close) return fail(comma, `trailing comma before '${top.close}'`);
        want = top.close === "}" ? "key" : "value";
      } else return misclosed(i) ?? fail(i, `expected ',' or '${top.close}', got ${describe(text, i)}`);
      continue;
    }
    if ((want === "key-or-close" && c === "}") || (want === "value-or-close" && c === "]")) {
      stack.pop();
      i++;
      want = "after-value";
      continue;
    }
    if (want === "key" || want === "key-or-close") {
      if (c !== '"') return misclosed(i) ?? fail(i, `expected a property name in double quotes, got ${describe(text, i)}`);
      const end = stringEnd(text, i);
      if (typeof end !== "number") return end;
      i = end;
      while (i < text.length && " \t\n\r".includes(text[i]!)) i++;
      if (text[i] !== ":") return fail(i, `expected ':' after the property name, got ${describe(text, i)}`);
      i++;
      want = "value";
      continue;
    }
    // A value.
    if (c === "{" || c === "[") {
      stack.push({ close: c === "{" ? "}" : "]", at: i++ });
      want = c === "{" ? "key-or-close" : "value-or-close";
      continue;
    }
    if (c === '"') {
      const end = stringEnd(text, i);
      if (typeof end !== "number") return end;
      i = end;
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      const token = /[-+.\deE]+/y;
      token.lastIndex = i;
      const number = token.exec(text)![0];
      if (!NUMBER.test(number)) return fail(i, `invalid number "${number}"`);
      i += number.length;
    } else {
      const w = word(text, i);
      if (w !== "true" && w !== "false" && w !== "null") return misclosed(i) ?? fail(i, `expected a value, got ${describe(text, i)}`);
      i += w.length;
    }
    want = "after-value";
  }
}

/** The index after the string that opens at `start`, or why it is not a JSON string. */
function stringEnd(text: string, start: number): number | { at: number; reason: string } {
  for (let j = start + 1; j < text.length; j++) {
    const c = text[j]!;
    if (c === '"') return j + 1;
    if (c === "\\") {
      const e = text[j + 1];
      const hex = e === "u" ? /^[0-9a-fA-F]{0,4}/.exec(text.slice(j + 2, j + 6))![0] : "";
      if (hex.length === 4) j += 5;
      else if (e !== undefined && ESCAPES.has(e)) j++;
      else return { at: j, reason: `invalid escape ${text.slice(j, j + 2)}${hex} in a string` };
    } else if (c === "\n" || c === "\r") return { at: start, reason: "string not closed on its line" };
    else if (c < " ") return { at: j, reason: `control character U+${c.charCodeAt(0).toString(16).padStart(4, "0").toUpperCase()} in a string (escape it)` };
  }
  return { at: start, reason: "string not closed before the end of the file" };
}

function word(text: string, at: number): string {
  const re = /[A-Za-z_$][\w$]*/y;
  re.lastIndex = at;
  return re.exec(text)?.[0] ?? "";
}

/** What stands at `at`, for a message: a word whole, else one character. */
function describe(text: string, at: number): string {
  if (at >= text.length) return "the end of the file";
  const w = word(text, at);
  if (w) return JSON.stringify(w);
  const c = String.fromCodePoint(text.codePointAt(at)!);
  return c === "'" ? `"'" (strings take double quotes)` : c === "/" ? "'/' (JSON has no comments)" : `'${c}'`;
}

function placeOf(text: string, at: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let k = text.indexOf("\n"); k !== -1 && k < at; k = text.indexOf("\n", k + 1)) {
    line++;
    lineStart = k + 1;
  }
  return { line, column: Array.from(text.slice(lineStart, at)).length + 1 };
}
