/** deploy/systemd: units, their environment files and the files they install, checked against the CLI. */
import { posix } from "node:path";
import {
  checkControlPlanePorts, checkInvocation, checkServicesKnown, configArgOr, effective, last, manifestsOf, serviceNames,
  type Arg, type Checked, type Content, type Effective, type Files, type Problem, type Report,
} from "./common.ts";

// ───────────────────────────── systemd ─────────────────────────────

interface Directive {
  section: string;
  key: string;
  value: string;
  line: number;
  /** The source line of each character of `value` (continuations join several). */
  lineAt: number[];
}

export function parseUnit(file: string, text: string, problems: Problem[]): Directive[] {
  const out: Directive[] = [];
  const lines = text.split("\n");
  let section = "";
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    if (/^\s*([#;].*)?$/.test(raw)) continue;
    const sec = /^\[([^\]]+)\]\s*$/.exec(raw);
    if (sec) {
      section = sec[1]!;
      continue;
    }
    const kv = /^([A-Za-z][A-Za-z0-9]*)\s*=\s*(.*)$/.exec(raw);
    if (!kv || !section) {
      problems.push({ file, line: i + 1, message: `not a systemd directive: ${raw.trim()}` });
      continue;
    }
    const d: Directive = { section, key: kv[1]!, value: "", line: i + 1, lineAt: [] };
    let part = kv[2]!;
    let lineNo = i + 1;
    for (;;) {
      const cont = part.endsWith("\\");
      const piece = cont ? part.slice(0, -1) + " " : part;
      d.value += piece;
      d.lineAt.push(...Array<number>(piece.length).fill(lineNo));
      if (!cont || i + 1 >= lines.length) break;
      i++;
      while (i < lines.length && /^\s*[#;]/.test(lines[i]!)) i++; // comments inside a continuation are skipped
      part = lines[i] ?? "";
      lineNo = i + 1;
    }
    d.value = d.value.trimEnd();
    out.push(d);
  }
  return out;
}

interface Word {
  text: string;
  start: number;
  quoted: boolean;
}

/** systemd's word splitting for ExecStart= and Environment=: quotes and C escapes. */
export function systemdWords(value: string): Word[] {
  const words: Word[] = [];
  let i = 0;
  while (i < value.length) {
    while (i < value.length && /\s/.test(value[i]!)) i++;
    if (i >= value.length) break;
    const start = i;
    let text = "";
    let quoted = false;
    while (i < value.length && !/\s/.test(value[i]!)) {
      const ch = value[i]!;
      if (ch === '"' || ch === "'") {
        quoted = true;
        const end = value.indexOf(ch, i + 1);
        const inner = value.slice(i + 1, end === -1 ? undefined : end);
        text += inner.replace(/\\(.)/g, "$1");
        i = end === -1 ? value.length : end + 1;
      } else if (ch === "\\" && i + 1 < value.length) {
        text += value[i + 1];
        i += 2;
      } else {
        text += ch;
        i++;
      }
    }
    words.push({ text, start, quoted });
  }
  return words;
}

interface EnvValue {
  value: string;
  file: string;
  line: number;
}

export function parseEnvFile(file: string, text: string, problems: Problem[]): Map<string, EnvValue> {
  const env = new Map<string, EnvValue>();
  text.split("\n").forEach((raw, i) => {
    if (/^\s*([#;].*)?$/.test(raw)) return;
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(raw);
    if (!m) {
      problems.push({ file, line: i + 1, message: `not KEY=VALUE: ${raw.trim()}` });
      return;
    }
    let value = m[2]!.trim();
    const q = /^(["'])(.*)\1$/.exec(value);
    if (q) value = q[2]!;
    else if (/["'`$\\]/.test(value)) problems.push({ file, line: i + 1, message: `${m[1]}: quotes, $ and \\ mean something else to systemd than to a shell; quote the whole value or leave them out` });
    env.set(m[1]!, { value, file, line: i + 1 });
  });
  return env;
}

/** systemd time spans: "45s", "1min 30s", "90" (seconds), "infinity". */
export function systemdSeconds(text: string): number | undefined {
  const t = text.trim();
  if (t === "infinity") return Infinity;
  if (/^\d+(\.\d+)?$/.test(t)) return Number(t);
  const units: Record<string, number> = { us: 1e-6, ms: 1e-3, s: 1, sec: 1, second: 1, seconds: 1, m: 60, min: 60, minute: 60, minutes: 60, h: 3600, hr: 3600, hour: 3600, hours: 3600 };
  let total = 0;
  const re = /(\d+(?:\.\d+)?)\s*([a-z]+)\s*/gy;
  let m: RegExpExecArray | null;
  let end = 0;
  while ((m = re.exec(t))) {
    const unit = units[m[2]!];
    if (unit === undefined) return undefined;
    total += Number(m[1]) * unit;
    end = re.lastIndex;
  }
  return end === t.length && end > 0 ? total : undefined;
}

const SYSTEMD_INSTALL = "/etc/mesh/";

export function checkSystemd(files: Files, report: Report): void {
  const { problems } = report;
  const dir = "deploy/systemd/";
  const documented = (files.get("deploy/README.md") ?? "").split("\n");
  const units = [...files.keys()].filter((f) => f.startsWith(dir) && f.endsWith(".service"));
  const procs: { unit: string; c: Checked; e: Effective; instance: string }[] = [];
  const recipe = (path: string) => (path.startsWith(SYSTEMD_INSTALL) ? dir + path.slice(SYSTEMD_INSTALL.length) : undefined);
  const contentAt = (path: string): Content[] | undefined => {
    const rel = recipe(path);
    if (!rel) return undefined;
    if (files.has(rel)) return [{ file: rel, line: 1, text: files.get(rel)! }];
    const under = [...files.keys()].filter((f) => f.startsWith(rel.replace(/\/?$/, "/")) && /\.(ya?ml|json)$/.test(f));
    return under.length ? under.map((f) => ({ file: f, line: 1, text: files.get(f)! })) : undefined;
  };

  for (const file of units) {
    const text = files.get(file)!;
    const directives = parseUnit(file, text, problems);
    const all = (key: string, section = "Service") => directives.filter((d) => d.section === section && d.key === key);
    const one = (key: string, section = "Service") => all(key, section).at(-1);
    const name = file.slice(dir.length);
    const template = name.includes("@.");
    const at = (d: Directive | undefined, message: string) => problems.push({ file, line: d?.line ?? 1, message: `${name}: ${message}` });

    // Hardening and stop behaviour every mesh unit keeps.
    const expect = (key: string, ok: (v: string) => boolean, want: string) => {
      const d = one(key);
      if (!d || !ok(d.value)) at(d, `${key}=${d?.value ?? "(unset)"}: expected ${want}`);
    };
    expect("NoNewPrivileges", (v) => v === "yes" || v === "true", "yes");
    expect("ProtectSystem", (v) => v === "strict", "strict");
    expect("AmbientCapabilities", (v) => v === "", "empty (no capabilities)");
    expect("CapabilityBoundingSet", (v) => v === "", "empty (no capabilities)");
    expect("KillSignal", (v) => v === "SIGTERM", "SIGTERM (mesh drains on it)");
    expect("Restart", (v) => v === "on-failure" || v === "always", "on-failure");
    if (one("DynamicUser")?.value !== "yes" && !one("User")) at(undefined, "runs as root: set DynamicUser=yes or User=");

    const execs = all("ExecStart");
    if (execs.length !== 1) {
      at(execs[1], `expected one ExecStart=, found ${execs.length}`);
      continue;
    }
    const exec = execs[0]!;

    // A template's instances are the example environment files that match its EnvironmentFile=.
    const envFiles = all("EnvironmentFile");
    let instances = [""];
    if (template) {
      const pattern = envFiles.map((d) => d.value.replace(/^-/, "")).find((p) => p.includes("%i"));
      if (!pattern) {
        at(exec, "a template unit without an EnvironmentFile=…%i… has nothing to tell its instances apart");
        continue;
      }
      const re = new RegExp(`^${(recipe(pattern) ?? pattern).replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace("%i", "([A-Za-z0-9_-]+)")}$`);
      instances = [...files.keys()].flatMap((f) => re.exec(f)?.[1] ?? []);
      if (!instances.length) at(envFiles[0], `no example instance: nothing in ${dir} matches ${pattern}`);
    }

    for (const instance of instances) {
      const unitName = template ? name.replace("@.", `@${instance}.`) : name;
      const where = `${unitName} ExecStart`;
      const spec = (s: string, d: Directive): string =>
        s.replace(/%(.)/g, (m, ch: string) => {
          const prefix = unitName.replace(/\.service$/, "");
          const values: Record<string, string> = {
            i: instance, I: instance, n: unitName, N: prefix, p: prefix.split("@")[0]!,
            d: `/run/credentials/${unitName}`, S: "/var/lib", t: "/run", E: "/etc", "%": "%",
          };
          const v = values[ch];
          if (v === undefined) at(d, `specifier ${m} is not one these checks know`);
          return v ?? m;
        });

      // Environment: Environment= first, EnvironmentFile= overrides.
      const env = new Map<string, EnvValue>();
      for (const d of all("Environment"))
        for (const w of systemdWords(d.value)) {
          const eq = w.text.indexOf("=");
          if (eq <= 0) at(d, `Environment=: "${w.text}" is not NAME=VALUE`);
          else env.set(w.text.slice(0, eq), { value: spec(w.text.slice(eq + 1), d), file, line: d.lineAt[w.start] ?? d.line });
        }
      for (const d of envFiles) {
        const optional = d.value.startsWith("-");
        const path = spec(d.value.replace(/^-/, ""), d);
        const rel = recipe(path);
        if (!rel || !files.has(rel)) {
          if (!optional) at(d, `EnvironmentFile=${path}: no such file in the recipe (${rel ?? "outside " + SYSTEMD_INSTALL})`);
          continue;
        }
        for (const [k, v] of parseEnvFile(rel, files.get(rel)!, problems)) env.set(k, v);
      }
      const credentials = new Set(all("LoadCredential").map((d) => d.value.split(":")[0]!));
      for (const d of all("LoadCredential")) {
        const source = spec(d.value.split(":").slice(1).join(":"), d);
        if (source && !isDocumented(source, instance, text, documented)) at(d, `LoadCredential= source ${source} is neither in the recipe nor explained in deploy/README.md or the unit's comments`);
      }

      // ExecStart: specifiers, then ${VAR} (one word) and $VAR (split into words).
      const value = exec.value.replace(/^[-@:+!]+/, "");
      const argv: Arg[] = [];
      const lineOf = (w: Word) => exec.lineAt[w.start + (exec.value.length - value.length)] ?? exec.line;
      for (const w of systemdWords(value)) {
        const bare = !w.quoted && /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(w.text);
        if (bare) {
          const v = env.get(bare[1]!);
          if (!v) at(exec, `$${bare[1]} is not set by Environment= or EnvironmentFile= (instance ${instance || "-"})`);
          for (const part of (v?.value ?? "").split(/\s+/).filter(Boolean)) argv.push({ value: part, file: v!.file, line: v!.line });
          continue;
        }
        let from: EnvValue | undefined;
        const text2 = spec(w.text, exec)
          .replace(/\$\$/g, "\0")
          .replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, k: string) => {
            const v = env.get(k);
            if (!v) problems.push({ file, line: lineOf(w), message: `${where}: \${${k}} is not set by Environment= or EnvironmentFile= (instance ${instance || "-"})` });
            else if (v.value === "") problems.push({ file: v.file, line: v.line, message: `${where}: ${k} is empty, so its flag gets an empty argument` });
            from = from ?? v;
            return v?.value ?? "";
          })
          .replace(/\0/g, "$");
        // A word that came from an environment file is blamed on that file's line.
        argv.push(from && w.text.startsWith("${") && w.text.endsWith("}") ? { value: text2, file: from.file, line: from.line } : { value: text2, file, line: lineOf(w) });
      }
      const c = checkInvocation({ where, file, line: exec.line, argv }, problems);
      if (!c) continue;
      report.commands.push(c);
      const e = effective(c, contentAt, problems, report.manifests);
      procs.push({ unit: unitName, c, e, instance });

      // Paths: ProtectSystem=strict leaves only the unit's own directories writable.
      const writable = [
        ...all("StateDirectory").flatMap((d) => d.value.split(/\s+/).map((p) => `/var/lib/${spec(p, d)}`)),
        ...all("RuntimeDirectory").flatMap((d) => d.value.split(/\s+/).map((p) => `/run/${spec(p, d)}`)),
        ...all("CacheDirectory").flatMap((d) => d.value.split(/\s+/).map((p) => `/var/cache/${spec(p, d)}`)),
        ...all("LogsDirectory").flatMap((d) => d.value.split(/\s+/).map((p) => `/var/log/${spec(p, d)}`)),
        ...all("ReadWritePaths").flatMap((d) => d.value.split(/\s+/).map((p) => spec(p.replace(/^-/, ""), d))),
      ];
      const cwd = one("WorkingDirectory") ? spec(one("WorkingDirectory")!.value, one("WorkingDirectory")!) : "/";
      const abs = (p: string) => posix.resolve(cwd, p);
      const under = (p: string, roots: string[]) => roots.some((r) => abs(p) === r || abs(p).startsWith(r.replace(/\/?$/, "/")));
      const blameAt = (x: { arg?: Arg }) => x.arg ?? configArgOr(c);
      for (const w of e.writes)
        if (!under(w.path, writable)) {
          const b = blameAt(w);
          problems.push({ file: b.file, line: b.line, message: `${where}: ${w.what} ${abs(w.path)} is read-only under ProtectSystem=strict; put it under ${writable.join(" or ") || "a StateDirectory="}` });
        }
      for (const r of e.reads) {
        const p = abs(r.path);
        const b = blameAt(r);
        if (p.startsWith(`/run/credentials/${unitName}/`)) {
          const cred = p.slice(`/run/credentials/${unitName}/`.length);
          if (!credentials.has(cred)) problems.push({ file: b.file, line: b.line, message: `${where}: ${r.what} ${r.path}: no LoadCredential=${cred}:…` });
        } else if (under(p, writable)) {
          // the service's own state
        } else if (contentAt(p)) {
          // a file or directory this recipe ships
        } else if (!isDocumented(p, instance, text, documented)) {
          problems.push({ file: b.file, line: b.line, message: `${where}: ${r.what} ${p} is not in the recipe and neither deploy/README.md nor the unit's comments say where it comes from` });
        }
        if (one("ProtectHome")?.value === "yes" && /^\/(home|root|run\/user)\//.test(p))
          problems.push({ file: b.file, line: b.line, message: `${where}: ${r.what} ${p} is hidden by ProtectHome=yes` });
      }

      // Stopping: systemd must wait longer than the drain.
      const stop = one("TimeoutStopSec");
      const stopS = stop ? systemdSeconds(stop.value) : 90; // DefaultTimeoutStopSec
      if (stop && stopS === undefined) at(stop, `TimeoutStopSec=${stop.value} is not a time span`);
      if (e.drainMs !== undefined && stopS !== undefined && stopS * 1000 <= e.drainMs)
        problems.push({ file, line: stop?.line ?? exec.line, message: `${where}: TimeoutStopSec=${stop?.value ?? "90s (default)"} is not above the drain timeout ${e.drainMs / 1000}s; systemd would SIGKILL a drain in progress` });
    }
  }

  // Across units: the sidecars reach the control plane's ports, and instances on one host do not collide.
  const cps = procs.filter((p) => p.c.path === "mesh control-plane");
  const proxies = procs.filter((p) => p.c.path === "mesh proxy");
  for (const cp of cps) {
    for (const p of proxies) checkControlPlanePorts(p.c, p.e, cp.e, (port) => port, problems);
    const known = serviceNames(cp.e.policiesDir ? manifestsOf(contentAt(posix.resolve("/", cp.e.policiesDir)) ?? [], [], new Map()) : []);
    checkServicesKnown(proxies, known, `the control plane's policies (${cp.e.policiesDir})`, problems);
  }
  const taken = new Map<number, string>();
  for (const p of procs)
    for (const l of p.e.listeners) {
      const other = taken.get(l.port);
      const at = last(p.c, l.role) ?? p.c.inv;
      if (other) problems.push({ file: at.file, line: at.line, message: `${p.unit}: ${l.role} port ${l.port} is also ${other}; instances sharing a host need distinct ports` });
      else taken.set(l.port, `${p.unit}'s ${l.role}`);
    }
}


/** A file the operator provides: the unit's comments or deploy/README.md say where it comes from. */
function isDocumented(path: string, instance: string, unitText: string, readme: string[]): boolean {
  const forms = new Set([path, instance ? path.replaceAll(instance, "%i") : path]);
  const comments = unitText.split("\n").filter((l) => /^\s*#/.test(l));
  return [...comments, ...readme].some((l) => [...forms].some((f) => l.includes(f)));
}
