/** Markdown building blocks for the generated reference: escaping, code spans, tables. */

/** Escapes prose so `<dir>`, `*.yaml` or a `|` shows as written (in tables too). */
export function text(s: string): string {
  return s
    .replace(/[\\`*<>|]/g, (c) => `\\${c}`)
    .replace(/_/g, (c, i: number, all: string) => (/\w/.test(all[i - 1] ?? "") && /\w/.test(all[i + 1] ?? "") ? c : `\\${c}`));
}

/** Keeps a line of prose from starting a list, heading or setext underline. */
function inline(line: string): string {
  if (/^[=-]+$/.test(line) || /^[-+#](\s|$)/.test(line)) return `\\${line}`;
  return line.replace(/^(\d+)([.)])(?=\s|$)/, "$1\\$2");
}

/** Help text as wrapped for a terminal: the same lines (hard breaks), blank lines between paragraphs. */
export function lines(s: string): string {
  return s
    .trim()
    .split(/\n\s*\n/)
    .map((para) =>
      para
        .split("\n")
        .map((line) => inline(text(line.trim())))
        .join("\\\n"),
    )
    .join("\n\n");
}

/** A code span; `inTable` escapes `|`, which GFM tables need even inside code. */
export function code(s: string, inTable = false): string {
  const body = inTable ? s.replace(/\|/g, "\\|") : s;
  const fence = body.includes("`") ? "``" : "`";
  return `${fence}${fence.length > 1 ? " " : ""}${body}${fence.length > 1 ? " " : ""}${fence}`;
}

export function table(header: string[], rows: string[][]): string {
  const row = (cells: string[]) => `| ${cells.map((c) => c.replace(/\n/g, " ")).join(" | ")} |`;
  return [row(header), row(header.map(() => "---")), ...rows.map(row)].join("\n");
}
