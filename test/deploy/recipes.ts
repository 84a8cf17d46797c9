/**
 * Checks the deployment recipes in deploy/ against the code they drive: every `mesh …`
 * command line they contain is parsed with the real CLI declaration, every embedded mesh
 * manifest is validated with parseManifestText, and the recipes' own cross-references
 * (mounts, ports, probes, timeouts, who writes which file) are checked. Everything works on
 * an in-memory file set, so a test can break a copy and see the problem named with its
 * file and line.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { checkInvocation, formatProblem, manifestsOf, type Files, type Report } from "./common.ts";
import { checkCompose } from "./compose.ts";
import { checkKubernetes } from "./kubernetes.ts";
import { meshCommandsInShell } from "./shell.ts";
import { checkSystemd } from "./systemd.ts";

export { formatProblem, type Files, type Problem, type Report } from "./common.ts";
export { shellWords } from "./shell.ts";
export { parseEnvFile, systemdSeconds, systemdWords } from "./systemd.ts";

export function loadFiles(root: string): Files {
  const files: Files = new Map();
  const walk = (dir: string) => {
    for (const name of readdirSync(join(root, dir)).sort()) {
      const rel = `${dir}/${name}`;
      if (statSync(join(root, rel)).isDirectory()) walk(rel);
      else files.set(rel, readFileSync(join(root, rel), "utf8"));
    }
  };
  walk("deploy");
  return files;
}

// ───────────────────────────── README and loose manifests ─────────────────────────────

/** `mesh …` lines in deploy/README.md's sh blocks parse too. */
export function checkReadme(files: Files, report: Report): void {
  const file = "deploy/README.md";
  const text = files.get(file);
  if (text === undefined) {
    report.problems.push({ file, line: 1, message: "missing" });
    return;
  }
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(sh|bash|shell)\s*$/.test(lines[i]!)) continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && !lines[end]!.startsWith("```")) end++;
    for (const inv of meshCommandsInShell(lines.slice(start, end).join("\n"), file, start + 1, "deploy/README.md")) {
      const c = checkInvocation(inv, report.problems);
      if (c) report.commands.push(c);
    }
    i = end;
  }
}

/** Every YAML or JSON file outside kubernetes/ and the compose file is a mesh manifest file. */
export function checkManifestFiles(files: Files, report: Report): void {
  for (const [file, text] of files) {
    if (!/\.(ya?ml|json)$/.test(file) || file.startsWith("deploy/kubernetes/") || /^deploy\/compose\/[^/]*compose[^/]*\.ya?ml$/.test(file)) continue;
    manifestsOf([{ file, line: 1, text }], report.problems, report.manifests);
  }
}

export function checkAll(files: Files): Report {
  const report: Report = { problems: [], commands: [], manifests: new Map() };
  checkManifestFiles(files, report);
  checkSystemd(files, report);
  checkKubernetes(files, report);
  checkCompose(files, report);
  checkReadme(files, report);
  // One problem found along two paths is one problem.
  const seen = new Set<string>();
  report.problems = report.problems.filter((p) => !seen.has(formatProblem(p)) && !!seen.add(formatProblem(p)));
  return report;
}
