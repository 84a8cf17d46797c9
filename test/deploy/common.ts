/**
 * What every recipe check shares: a `mesh …` command line parsed with the real CLI
 * declaration (src/main.ts's command table and parseArgs, values checked the way the
 * commands check them), the settings it amounts to (listeners, drain, paths it reads and
 * writes, flags over --config over defaults), embedded manifests validated with
 * parseManifestText, and the line-finding that lets every problem name its file and line.
 */
import { posix } from "node:path";
import { COMMON_FLAGS, parseArgs, type CommandSpec, type FlagSpec, type Parsed } from "../../src/cli/args.ts";
import { durationFlag, parseListen } from "../../src/cli/flags.ts";
import { isHost } from "../../src/config/common.ts";
import { parseDuration } from "../../src/config/duration.ts";
import type { ControlPlaneConfig } from "../../src/config/kinds/control-plane-config.ts";
import { Upstream, type ProxyConfig } from "../../src/config/kinds/proxy-config.ts";
import { formatManifestError, parseManifestText, type LoadedManifest, type ManifestError } from "../../src/config/load.ts";
import { UsageError } from "../../src/core/errors.ts";
import { LOG_LEVELS } from "../../src/core/log.ts";
import { nameProblem, trustDomainProblem } from "../../src/pki/spiffe.ts";
import { loadCommandTree } from "../../src/docs/commands.ts";
import { rootCommand } from "../../src/main.ts";

/** Every command loaded, so invocations are checked against their real flags. */
const commands = await loadCommandTree(rootCommand);

// ───────────────────────────── shared types ─────────────────────────────

/** Recipe files by path from the repository root, e.g. "deploy/systemd/mesh-proxy@.service". */
export type Files = Map<string, string>;

export interface Problem {
  file: string;
  line: number;
  message: string;
}

export function formatProblem(p: Problem): string {
  return `${p.file}:${p.line}: ${p.message}`;
}

/** One word of a command line and where it was written. */
export interface Arg {
  value: string;
  file: string;
  line: number;
}

/** A `mesh …` command line found in a recipe. */
export interface Invocation {
  /** Human context: "mesh-proxy@orders.service ExecStart", "Deployment default/orders container mesh-proxy". */
  where: string;
  file: string;
  line: number;
  argv: Arg[];
  /** Files the surrounding shell writes with `>` (compose init scripts, README lines). */
  redirects?: Arg[];
}

/** An invocation that parsed: its command and flags, with each flag's value word. */
export interface Checked {
  inv: Invocation;
  path: string;
  spec: CommandSpec;
  args: Parsed;
  values: Map<string, Arg[]>;
}

export interface Report {
  problems: Problem[];
  /** Every command line checked, so a test can tell that the checks found what they should. */
  commands: Checked[];
  /** Every embedded mesh manifest validated: "file[#key]" → number of documents. */
  manifests: Map<string, number>;
}

export type Obj = Record<string, unknown>;
export const obj = (x: unknown): Obj | undefined => (typeof x === "object" && x !== null && !Array.isArray(x) ? (x as Obj) : undefined);
export const arr = (x: unknown): unknown[] => (Array.isArray(x) ? x : []);
export const str = (x: unknown): string | undefined => (typeof x === "string" ? x : undefined);
export const num = (x: unknown): number | undefined => (typeof x === "number" ? x : undefined);


/** 1-based number of the first line at or after `from` that `match` accepts; undefined when none. */
export function findLine(text: string, match: (line: string) => boolean, from = 1): number | undefined {
  const lines = text.split("\n");
  for (let i = Math.max(0, from - 1); i < lines.length; i++) if (match(lines[i]!)) return i + 1;
  return undefined;
}

export const containing = (needle: string) => (line: string) => line.includes(needle);

/** Lines of `raws` in order, each at or after the previous one: how YAML list items are found. */
export function locate(text: string, raws: string[], from: number): number[] {
  let cursor = from;
  return raws.map((raw) => {
    const escaped = raw.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const token = new RegExp(`(^|[\\s\\[,"'])${escaped}($|[\\s\\],"'#])`);
    const line = findLine(text, (l) => !/^\s*#/.test(l) && token.test(l), cursor);
    if (line !== undefined) cursor = line;
    return line ?? cursor;
  });
}

// ───────────────────────────── the CLI check ─────────────────────────────

const WRITES: Record<string, string[]> = {
  "mesh proxy": ["certs-dir"],
  "mesh control-plane": ["data-dir", "ca-dir", "admin-token-file"],
  "mesh ca init": ["out"],
  "mesh ca issue": ["out"],
  "mesh ca bundle": ["out"],
};

const isPathFlag = (f: FlagSpec) => f.value !== undefined && /^(FILE|DIR)(\|(FILE|DIR))?$/.test(f.value);

/** Flags whose values are paths, and whether the command writes there. */
export function pathFlags(c: Checked): { name: string; arg: Arg; mode: "read" | "write"; dir: boolean }[] {
  const out: { name: string; arg: Arg; mode: "read" | "write"; dir: boolean }[] = [];
  for (const f of c.spec.flags ?? []) {
    if (!isPathFlag(f)) continue;
    for (const arg of c.values.get(f.name) ?? [])
      out.push({ name: f.name, arg, mode: (WRITES[c.path] ?? []).includes(f.name) ? "write" : "read", dir: f.value === "DIR" });
  }
  return out;
}

function valueProblem(flag: FlagSpec, value: string, path: string): string | undefined {
  const name = `--${flag.name}`;
  const usage = (fn: () => unknown) => {
    try {
      fn();
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  };
  switch (flag.value) {
    case "ADDR:PORT":
      return usage(() => parseListen(value, name));
    case "DURATION":
      return usage(() => durationFlag(value, name));
    case "URL": {
      if (path === "mesh proxy" && flag.name === "upstream") {
        const r = Upstream.safeParse(value);
        return r.success ? undefined : `${name}: ${r.error.issues[0]?.message}`;
      }
      let url: URL;
      try {
        url = new URL(value);
      } catch {
        return `${name}: expected a URL, got "${value}"`;
      }
      return url.protocol === "http:" || url.protocol === "https:" ? undefined : `${name}: expected http(s), got "${value}"`;
    }
    case "NAME":
    case "NS": {
      if (flag.name !== "service" && flag.name !== "namespace") return undefined;
      const bad = nameProblem(flag.name, value);
      return bad ? `${name}: ${bad}` : undefined;
    }
    case "SERVICE": {
      const parts = value.split(".");
      if (parts.length > 2) return `${name}: expected NAME or NAME.NAMESPACE, got "${value}"`;
      const bad = parts.map((p) => nameProblem("service", p)).find(Boolean);
      return bad ? `${name}: ${bad}` : undefined;
    }
    case "ADDRESS":
      return isHost(value) ? undefined : `${name}: expected an address or hostname, got "${value}"`;
    case "LEVEL":
      return (LOG_LEVELS as readonly string[]).includes(value) ? undefined : `${name}: "${value}" is not one of ${LOG_LEVELS.join(", ")}`;
    case "TD": {
      const bad = trustDomainProblem(value);
      return bad ? `${name}: ${bad}` : undefined;
    }
    case "PATH":
      return value.startsWith("/") ? undefined : `${name}: expected a path like /healthz, got "${value}"`;
    case "TYPE":
      return value === "embedded" || value === "etcd" ? undefined : `${name}: expected embedded or etcd, got "${value}"`;
    case "BYTES":
      return /^[1-9]\d*$/.test(value) ? undefined : `${name}: expected a positive number of bytes, got "${value}"`;
    default:
      if (isPathFlag(flag) && value.trim() === "") return `${name}: empty path`;
      return undefined;
  }
}

/** The argument a UsageError message is about: its flag, or its quoted value. */
function blame(message: string, argv: Arg[], fallback: Arg): Arg {
  const flag = /(?:^|\s)(--?[A-Za-z0-9][A-Za-z0-9-]*)/.exec(message)?.[1];
  const quoted = /"([^"]*)"/.exec(message)?.[1];
  const hit =
    (flag && argv.find((a) => a.value === flag || a.value.startsWith(`${flag}=`))) ||
    (quoted !== undefined && argv.find((a) => a.value === quoted));
  return hit || fallback;
}

/** Resolves the subcommand as src/cli/run.ts does, then parses and checks every flag value. */
export function checkInvocation(inv: Invocation, problems: Problem[]): Checked | undefined {
  const fail = (at: Arg | Invocation, message: string) => {
    problems.push({ file: at.file, line: at.line, message: `${inv.where}: ${message}` });
    return undefined;
  };
  const [first, ...rest] = inv.argv;
  if (!first || !/(^|\/)mesh$/.test(first.value)) return fail(first ?? inv, `expected a mesh command line, got "${first?.value ?? ""}"`);
  let spec = commands;
  let path = commands.name;
  let i = 0;
  while (spec.subcommands?.length && i < rest.length && !rest[i]!.value.startsWith("-")) {
    const word = rest[i]!;
    const next = spec.subcommands.find((s) => s.name === word.value);
    if (!next) return fail(word, `unknown command "${word.value}" for "${path}" (one of ${spec.subcommands.map((s) => s.name).join(", ")})`);
    spec = next;
    path = `${path} ${word.value}`;
    i++;
  }
  if (!spec.run) return fail(rest[i - 1] ?? first, `"${path}" is not a command that runs; it needs a subcommand`);
  const argv = rest.slice(i);
  let args: Parsed;
  try {
    args = parseArgs(spec, argv.map((a) => a.value), path);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    return fail(blame(err.message, argv, rest[i - 1] ?? first), err.message);
  }
  if (args.flags.help) return fail(first, `"${path} --help" only prints help`);

  const all = [...(spec.flags ?? []), ...COMMON_FLAGS];
  const values = new Map<string, Arg[]>();
  for (let k = 0; k < argv.length; k++) {
    const a = argv[k]!;
    if (a.value === "--") break;
    if (!a.value.startsWith("-") || a.value === "-") continue;
    const long = a.value.startsWith("--");
    const body = a.value.slice(long ? 2 : 1);
    const eq = body.indexOf("=");
    const key = eq === -1 ? body : body.slice(0, eq);
    const flag = all.find((f) => (long ? f.name === key : f.short === key));
    if (!flag || flag.type === "boolean") continue;
    const valueArg = eq === -1 ? argv[++k]! : { ...a, value: body.slice(eq + 1) };
    values.set(flag.name, [...(values.get(flag.name) ?? []), valueArg]);
    const bad = valueProblem(flag, valueArg.value, path);
    if (bad) fail(valueArg, bad);
  }
  return { inv, path, spec, args, values };
}

export const last = (c: Checked, name: string): Arg | undefined => c.values.get(name)?.at(-1);

// ───────────────────────────── what a command line amounts to ─────────────────────────────

export interface Listener {
  address: string;
  port: number;
  role: string;
}

/** Manifests behind a path: a file's documents, or a directory's. */
export interface Content {
  file: string;
  /** The recipe line that holds `text`'s first line (1 for a file, after the key for a ConfigMap entry). */
  line: number;
  text: string;
}

/** The line (1-based, within `text`) a manifest error is about: the unknown field, else the deepest key of its path that is written. */
function manifestErrorLine(text: string, e: ManifestError): number {
  const lines = text.split("\n");
  const starts = [1];
  lines.forEach((l, i) => {
    if (/^---\s*(#.*)?$/.test(l)) starts.push(i + 2);
  });
  const from = starts[e.doc ?? 0] ?? 1;
  const to = starts[(e.doc ?? 0) + 1] ?? lines.length + 1;
  const keys = e.path.split(".").map((k) => k.replace(/\[\d+\]$/g, "")).filter(Boolean).reverse();
  const unknown = /unknown field "([^"]+)"/.exec(e.message)?.[1];
  for (const key of unknown ? [unknown, ...keys] : keys) {
    const re = new RegExp(`(^|[\\s{,-])"?${key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}"?\\s*:`);
    const line = findLine(text, (l) => !/^\s*#/.test(l) && re.test(l), from);
    if (line !== undefined && line < to) return line;
  }
  return from;
}

export function manifestsOf(contents: Content[], problems: Problem[], seen: Map<string, number>): LoadedManifest[] {
  const out: LoadedManifest[] = [];
  for (const c of contents) {
    const { manifests, errors } = parseManifestText(c.text, c.file);
    seen.set(c.file, manifests.length + errors.length);
    for (const e of errors) problems.push({ file: c.file.split("#")[0]!, line: c.line - 1 + manifestErrorLine(c.text, e), message: `invalid manifest: ${formatManifestError(e)}` });
    out.push(...manifests);
  }
  return out;
}

/** The settings a command line runs with: flags over its --config over the code's defaults. */
export interface Effective {
  listeners: Listener[];
  drainMs?: number;
  /** Paths the process writes (relative ones against its working directory). */
  writes: { what: string; path: string; arg?: Arg; dir: boolean }[];
  reads: { what: string; path: string; arg?: Arg; dir: boolean }[];
  service?: { name: string; namespace: string };
  calls: string[];
  controlPlanes: URL[];
  bootstrapUrl?: URL;
  policiesDir?: string;
  configManifests: LoadedManifest[];
}

const listen = (c: Checked, flag: string, fromFile: { address: string; port: number } | undefined, fallback: string, role: string): Listener => {
  const given = last(c, flag);
  try {
    const l = given ? parseListen(given.value, `--${flag}`) : fromFile ?? parseListen(fallback, `--${flag}`);
    return { address: l.address, port: l.port, role };
  } catch {
    return { ...parseListen(fallback, flag), role }; // already reported by checkInvocation
  }
};

export function effective(c: Checked, readConfig: (path: string) => Content[] | undefined, problems: Problem[], seen: Map<string, number>): Effective {
  const e: Effective = { listeners: [], writes: [], reads: [], calls: [], controlPlanes: [], configManifests: [] };
  for (const p of pathFlags(c)) (p.mode === "write" ? e.writes : e.reads).push({ what: `--${p.name}`, path: p.arg.value, arg: p.arg, dir: p.dir });
  const configArg = last(c, "config");
  if (configArg) {
    const contents = readConfig(configArg.value);
    if (contents) e.configManifests = manifestsOf(contents, problems, seen);
  }
  const of = <T>(kind: string) => e.configManifests.filter((m) => m.manifest.kind === kind).map((m) => m.manifest as unknown as T);
  const value = (flag: string) => last(c, flag)?.value;
  if (c.path === "mesh proxy") {
    const pc = of<ProxyConfig>("ProxyConfig")[0]?.spec;
    e.listeners = [
      listen(c, "inbound", pc?.inbound, "0.0.0.0:15006", "inbound"),
      listen(c, "outbound", pc?.outbound, "127.0.0.1:15001", "outbound"),
      listen(c, "admin", pc?.admin, "127.0.0.1:15000", "admin"),
    ];
    // The status listener exists only when asked for.
    if (last(c, "status") || pc?.status) e.listeners.push(listen(c, "status", pc?.status, "0.0.0.0:15021", "status"));
    const drain = value("drain-timeout");
    e.drainMs = drain ? safeDuration(drain) : pc?.drainTimeout ?? 30_000;
    const name = value("service") ?? pc?.service;
    if (name) e.service = { name, namespace: value("namespace") ?? pc?.namespace ?? "default" };
    e.calls = (c.values.get("calls") ?? []).map((a) => a.value);
    e.controlPlanes = (c.values.get("control-plane") ?? []).flatMap((a) => (URL.canParse(a.value) ? [new URL(a.value)] : []));
    const b = value("bootstrap-url");
    if (b && URL.canParse(b)) e.bootstrapUrl = new URL(b);
    else if (e.controlPlanes[0]) {
      e.bootstrapUrl = new URL(e.controlPlanes[0].origin);
      e.bootstrapUrl.port = "15012";
    }
    if (e.controlPlanes.length && !value("certs-dir") && !value("cert"))
      e.writes.push({ what: "--certs-dir (default)", path: `certs/${e.service?.namespace}/${e.service?.name}`, dir: true });
  }
  if (c.path === "mesh control-plane") {
    const cps = of<ControlPlaneConfig>("ControlPlaneConfig");
    if (configArg && e.configManifests.length && cps.length !== 1)
      problems.push({ file: configArg.file, line: configArg.line, message: `${c.inv.where}: --config holds ${cps.length} ControlPlaneConfig documents; expected one` });
    const cfg = cps[0]?.spec;
    e.listeners = [
      listen(c, "api", cfg?.api, "0.0.0.0:15010", "api"),
      listen(c, "admin", cfg?.admin, "127.0.0.1:15011", "admin"),
      listen(c, "bootstrap", cfg?.bootstrap, "0.0.0.0:15012", "bootstrap"),
    ];
    const from = (flag: string, fromFile: string | undefined, fallback: string, what: string) =>
      last(c, flag) ? undefined : { what: fromFile !== undefined ? `${what} (--config)` : `${what} (default)`, path: fromFile ?? fallback, dir: true };
    const dataDir = value("data-dir") ?? cfg?.dataDir ?? "./data";
    for (const w of [from("data-dir", cfg?.dataDir, "./data", "dataDir"), from("ca-dir", cfg?.ca.dir, "certs", "ca.dir")]) if (w) e.writes.push(w);
    if (!value("admin-token-file")) e.writes.push({ what: "admin token (<data-dir>/admin-token)", path: posix.join(dataDir, "admin-token"), dir: false });
    e.policiesDir = value("policies") ?? cfg?.policiesDir ?? "policies";
    if (!value("policies") && cfg?.policiesDir) e.reads.push({ what: "policiesDir (--config)", path: cfg.policiesDir, dir: true });
  }
  return e;
}

export function safeDuration(text: string): number | undefined {
  try {
    return parseDuration(text);
  } catch {
    return undefined;
  }
}

const LOOPBACK = /^(127\.|::1$|localhost$)/;
export const isLoopback = (address: string) => LOOPBACK.test(address);
export const WILDCARD = new Set(["0.0.0.0", "::", ""]);

/** Services named by Service manifests, as "name.namespace". */
export function serviceNames(manifests: LoadedManifest[]): Set<string> {
  return new Set(manifests.filter((m) => m.manifest.kind === "Service").map((m) => `${m.manifest.metadata.name}.${m.manifest.metadata.namespace}`));
}

/** Sidecars' services and the services they call have Service manifests in the control plane's policies. */
export function checkServicesKnown(proxies: { c: Checked; e: Effective }[], known: Set<string>, where: string, problems: Problem[]): void {
  for (const { c, e } of proxies) {
    if (!e.controlPlanes.length || !e.service) continue;
    const own = `${e.service.name}.${e.service.namespace}`;
    const at = last(c, "service") ?? c.inv;
    if (!known.has(own)) problems.push({ file: at.file, line: at.line, message: `${c.inv.where}: no Service ${own} in ${where}, so no sidecar can call this one by name` });
    for (const call of c.values.get("calls") ?? []) {
      const target = call.value.includes(".") ? call.value : `${call.value}.${e.service.namespace}`;
      if (!known.has(target)) problems.push({ file: call.file, line: call.line, message: `${c.inv.where}: --calls ${call.value}: no Service ${target} in ${where}` });
    }
  }
}

/**
 * A sidecar's --control-plane port reaches the control plane's api listener, and its bootstrap
 * URL (port 15012 of the first control plane unless --bootstrap-url) the bootstrap listener.
 * `reach` maps a port the sidecar dials to the control plane's port (a Kubernetes Service's
 * targetPort; the same port elsewhere).
 */
export function checkControlPlanePorts(c: Checked, e: Effective, cp: Effective, reach: (port: number) => number | undefined, problems: Problem[]): void {
  const at = last(c, "control-plane") ?? c.inv;
  const api = cp.listeners.find((l) => l.role === "api")!;
  const boot = cp.listeners.find((l) => l.role === "bootstrap")!;
  for (const u of e.controlPlanes) {
    if (u.protocol !== "https:") problems.push({ file: at.file, line: at.line, message: `${c.inv.where}: --control-plane ${u.href} must be https (the API is mTLS)` });
    const port = Number(u.port || 443);
    if (reach(port) !== api.port)
      problems.push({ file: at.file, line: at.line, message: `${c.inv.where}: --control-plane port ${port} does not reach the control plane's api listener (${api.port})` });
  }
  if (e.bootstrapUrl) {
    const port = Number(e.bootstrapUrl.port || 443);
    const at2 = last(c, "bootstrap-url") ?? at;
    if (reach(port) !== boot.port)
      problems.push({ file: at2.file, line: at2.line, message: `${c.inv.where}: the bootstrap URL ${e.bootstrapUrl.origin} (port 15012 unless --bootstrap-url) does not reach the control plane's bootstrap listener (${boot.port})` });
  }
}

// ───────────────────────────── YAML documents ─────────────────────────────

export interface YamlDoc {
  file: string;
  /** 1-based line where the document's text starts. */
  line: number;
  text: string;
  value: unknown;
}

/** Splits on `---` lines so each document keeps its line numbers; empty documents are dropped. */
export function yamlDocs(file: string, text: string, problems: Problem[]): YamlDoc[] {
  const docs: YamlDoc[] = [];
  const lines = text.split("\n");
  let start = 0;
  const push = (end: number) => {
    const body = lines.slice(start, end).join("\n");
    if (body.split("\n").every((l) => /^\s*(#.*)?$/.test(l))) return;
    try {
      docs.push({ file, line: start + 1, text: body, value: Bun.YAML.parse(body) });
    } catch (err) {
      problems.push({ file, line: start + 1, message: `YAML: ${(err as Error).message}` });
    }
  };
  lines.forEach((l, i) => {
    if (/^---\s*(#.*)?$/.test(l)) {
      push(i);
      start = i + 1;
    }
  });
  push(lines.length);
  return docs;
}

/** Line of `key:` (at any indentation) at or after `from` in a file; `from` when absent. */
export function keyLine(text: string, key: string, from: number): number {
  const escaped = key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return findLine(text, (l) => new RegExp(`^\\s*(- )?["']?${escaped}["']?\\s*:`).test(l), from) ?? from;
}


export function configArgOr(c: Checked): Arg {
  return last(c, "config") ?? { value: "", file: c.inv.file, line: c.inv.line };
}
