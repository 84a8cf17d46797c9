/** Shell text in the recipes (compose init scripts, README code blocks): words, and the `mesh …` commands in them. */
import { containing, findLine, type Arg, type Invocation } from "./common.ts";

// ───────────────────────────── shell words (compose scripts, README) ─────────────────────────────

const OPERATORS = new Set(["|", "||", "&&", ";", "&"]);
const REDIRECTS = /^(\d?>>?|<|&>)$/;

/** Words of a shell line: quotes and backslashes; operators and redirections as words of their own; # starts a comment. */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let cur: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (/\s/.test(ch)) {
      if (cur !== undefined) words.push(cur);
      cur = undefined;
    } else if (ch === "#" && cur === undefined) {
      break;
    } else if (ch === "'") {
      const end = line.indexOf("'", i + 1);
      cur = (cur ?? "") + line.slice(i + 1, end === -1 ? undefined : end);
      i = end === -1 ? line.length : end;
    } else if (ch === '"') {
      let j = i + 1;
      let s = "";
      for (; j < line.length && line[j] !== '"'; j++) s += line[j] === "\\" && j + 1 < line.length ? line[++j] : line[j];
      cur = (cur ?? "") + s;
      i = j;
    } else if (ch === "\\" && i + 1 < line.length) {
      cur = (cur ?? "") + line[++i];
    } else if ("|&;<>".includes(ch)) {
      const op = /^(\d?>>?|&>|<|\|\||\||&&|&|;)/.exec(line.slice(i))![1]!;
      const fd = cur !== undefined && /^\d$/.test(cur) && op.startsWith(">") ? cur : undefined;
      if (cur !== undefined && fd === undefined) words.push(cur);
      cur = undefined;
      words.push(fd ? fd + op : op);
      i += op.length - 1;
    } else {
      cur = (cur ?? "") + ch;
    }
  }
  if (cur !== undefined) words.push(cur);
  return words;
}

/**
 * Where a shell command runs mesh: in command position (after sudo, env and VAR=value), right
 * after `--` (kubectl exec … -- mesh), or after `exec|run … SERVICE` (docker compose exec svc mesh).
 */
function meshWordAt(words: string[]): number {
  const isMesh = (w: string | undefined) => w !== undefined && (w === "mesh" || /^(\.?\/|\/)?([\w.-]+\/)*(bin|dist)\/mesh$/.test(w));
  let i = 0;
  while (i < words.length && (words[i] === "sudo" || words[i] === "env" || /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[i]!))) i++;
  if (isMesh(words[i])) return i;
  const dashes = words.indexOf("--");
  if (dashes !== -1 && isMesh(words[dashes + 1])) return dashes + 1;
  if ((words[i] === "docker" || words[i] === "podman") && words.some((w) => w === "exec" || w === "run")) {
    const k = words.findIndex((w, j) => j > i && w === "mesh");
    if (k !== -1) return k;
  }
  return -1;
}

/** `mesh …` commands in shell text (continuations joined): the words from `mesh` to the next operator, minus redirections. */
export function meshCommandsInShell(text: string, file: string, firstLine: number, where: string): Invocation[] {
  const out: Invocation[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let joined = lines[i]!;
    while (joined.endsWith("\\") && i + 1 < lines.length) joined = joined.slice(0, -1) + " " + lines[++i]!;
    const words = shellWords(joined);
    let cmd: string[] = [];
    const flush = () => {
      const at = meshWordAt(cmd);
      if (at !== -1) {
        const argv: Arg[] = [];
        const redirects: Arg[] = [];
        const ws = cmd.slice(at);
        for (let k = 0; k < ws.length; k++) {
          const line = firstLine + start + (findLine(lines.slice(start, i + 1).join("\n"), containing(ws[k]!)) ?? 1) - 1;
          if (REDIRECTS.test(ws[k]!)) {
            const target = ws[++k];
            if (target !== undefined && ws[k - 1]!.endsWith(">")) redirects.push({ value: target, file, line });
          } else argv.push({ value: ws[k]!, file, line });
        }
        out.push({ where, file, line: firstLine + start, argv, redirects });
      }
      cmd = [];
    };
    for (const w of words) {
      if (OPERATORS.has(w)) flush();
      else cmd.push(w);
    }
    flush();
  }
  return out;
}
