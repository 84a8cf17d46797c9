/** deploy/compose: services' mesh command lines, volumes, shared network namespaces and start order. */
import { posix } from "node:path";
import { isHost } from "../../src/config/common.ts";
import {
  arr, checkControlPlanePorts, checkInvocation, checkServicesKnown, configArgOr, containing, effective, findLine, isLoopback, last, locate,
  manifestsOf, obj, safeDuration, serviceNames, str, WILDCARD, yamlDocs,
  type Checked, type Content, type Effective, type Files, type Invocation, type Obj, type Problem, type Report,
} from "./common.ts";
import { meshCommandsInShell, shellWords } from "./shell.ts";

// ───────────────────────────── Compose ─────────────────────────────

interface ComposeMount {
  target: string;
  volume?: string;
  bind?: string;
  readOnly: boolean;
}

export function checkCompose(files: Files, report: Report): void {
  const { problems } = report;
  for (const [file, text] of files) {
    if (!/^deploy\/compose\/(compose|docker-compose)[^/]*\.ya?ml$/.test(file)) continue;
    checkComposeFile(file, text, files, report, problems);
  }
}

function checkComposeFile(file: string, text: string, files: Files, report: Report, problems: Problem[]): void {
  const base = posix.dirname(file);
  const docs = yamlDocs(file, text, problems);
  const root = obj(docs[0]?.value);
  const services = obj(root?.services);
  if (!root || !services) {
    problems.push({ file, line: 1, message: "no services:" });
    return;
  }
  const declaredVolumes = new Set(Object.keys(obj(root.volumes) ?? {}));
  // Compose interpolates $VAR and ${VAR} everywhere; the recipe uses none, so every $ must be $$.
  text.split("\n").forEach((l, i) => {
    if (!/^\s*#/.test(l) && l.replace(/\$\$/g, "").includes("$")) problems.push({ file, line: i + 1, message: "compose interpolates $… from the host environment; write $$ for a literal $" });
  });
  const serviceLine = (name: string) => findLine(text, (l) => new RegExp(`^\\s{2}["']?${name}["']?:\\s*$`).test(l)) ?? 1;
  type Svc = { name: string; body: Obj; line: number; mounts: ComposeMount[]; netns: string; commands: Checked[]; effective: Effective[] };
  const svcs: Svc[] = [];
  for (const [name, raw] of Object.entries(services)) {
    const body = obj(raw) ?? {};
    const line = serviceLine(name);
    const mounts = arr(body.volumes).flatMap((v): ComposeMount[] => {
      if (typeof v !== "string") return [];
      const [src, target, mode] = v.split(":");
      if (!src || !target) return [];
      const bind = src.startsWith(".") || src.startsWith("/");
      if (!bind && !declaredVolumes.has(src)) problems.push({ file, line: findLine(text, containing(v), line) ?? line, message: `service ${name}: volume ${src} is not declared under top-level volumes:` });
      if (bind && !src.startsWith("/")) {
        const rel = posix.join(base, src);
        if (!files.has(rel) && ![...files.keys()].some((f) => f.startsWith(rel + "/")))
          problems.push({ file, line: findLine(text, containing(v), line) ?? line, message: `service ${name}: bind mount ${src} is not in the recipe (${rel})` });
      }
      return [{ target: target.replace(/\/$/, ""), volume: bind ? undefined : src, bind: bind ? posix.join(base, src) : undefined, readOnly: mode === "ro" }];
    });
    const nm = str(body.network_mode);
    const netns = nm?.startsWith("service:") ? nm.slice("service:".length) : name;
    if (nm?.startsWith("service:") && !services[netns]) problems.push({ file, line, message: `service ${name}: network_mode ${nm} names no service` });
    else if (nm?.startsWith("service:") && str(obj(services[netns])?.network_mode)?.startsWith("service:"))
      problems.push({ file, line, message: `service ${name}: network_mode ${nm} points at a service that itself borrows a namespace` });
    svcs.push({ name, body, line, mounts, netns, commands: [], effective: [] });
  }
  const byName = new Map(svcs.map((s) => [s.name, s]));
  // Relative paths resolve against the image's WORKDIR (deploy/Dockerfile builds mesh:latest).
  const workdir = /^WORKDIR\s+(\S+)/m.exec(files.get("deploy/Dockerfile") ?? "")?.[1] ?? "/";
  const cwd = (s: Svc) => str(s.body.working_dir) ?? workdir;
  const dependsOn = (a: string, b: string, seen = new Set<string>()): boolean => {
    if (seen.has(a)) return false;
    seen.add(a);
    const deps = obj(byName.get(a)?.body.depends_on) ?? Object.fromEntries(arr(byName.get(a)?.body.depends_on).map((d) => [String(d), {}]));
    return Object.keys(deps).some((d) => d === b || dependsOn(d, b, seen));
  };

  // Command lines: entrypoint + command, shell scripts, and healthchecks.
  const toList = (x: unknown): string[] | undefined => (Array.isArray(x) ? x.map(String) : typeof x === "string" ? shellWords(x) : undefined);
  const producers: { volume: string; rel: string; dir: boolean; by: string }[] = [];
  const invs: { s: Svc; inv: Invocation }[] = [];
  for (const s of svcs) {
    const entry = toList(s.body.entrypoint);
    const command = toList(s.body.command) ?? [];
    const argvWords = [...(entry ?? []), ...command];
    const where = `compose service ${s.name}`;
    const shell = argvWords.findIndex((w, k) => /(^|\/)(ba)?sh$/.test(w) && /^-[a-z]*c[a-z]*$/.test(argvWords[k + 1] ?? ""));
    if (shell !== -1) {
      const script = argvWords[shell + 2] ?? "";
      const first = script.split("\n").find((l) => l.trim()) ?? "";
      const scriptLine = findLine(text, containing(first.trim()), s.line) ?? s.line;
      for (const inv of meshCommandsInShell(script.replace(/\n$/, ""), file, scriptLine, where)) invs.push({ s, inv });
    } else if (argvWords.length && /(^|\/)mesh$/.test(argvWords[0]!)) {
      const cmdLine = findLine(text, (l) => /^\s*(command|entrypoint):/.test(l), s.line) ?? s.line;
      const lines = locate(text, argvWords, cmdLine);
      invs.push({ s, inv: { where, file, line: cmdLine, argv: argvWords.map((w, k) => ({ value: w.replace(/\$\$/g, "$"), file, line: lines[k]! })) } });
    } else if (/(^|\/)mesh(:|@|$)/.test(str(s.body.image) ?? "")) {
      problems.push({ file, line: s.line, message: `${where}: image ${str(s.body.image)} without a mesh command line` });
    }
    const test = arr(obj(s.body.healthcheck)?.test).map(String);
    if (test[0] === "CMD" && /(^|\/)mesh$/.test(test[1] ?? "")) {
      const hl = findLine(text, (l) => /^\s*test:/.test(l), s.line) ?? s.line;
      invs.push({ s, inv: { where: `${where} healthcheck`, file, line: hl, argv: test.slice(1).map((w) => ({ value: w, file, line: hl })) } });
    } else if (test[0] === "CMD-SHELL") {
      const hl = findLine(text, (l) => /^\s*test:/.test(l), s.line) ?? s.line;
      for (const inv of meshCommandsInShell(test[1] ?? "", file, hl, `${where} healthcheck`)) invs.push({ s, inv });
    }
  }

  const volumeRel = (s: Svc, p: string): { volume?: string; bind?: string; rel: string; mount?: ComposeMount } => {
    const m = s.mounts.filter((x) => p === x.target || p.startsWith(x.target + "/")).sort((a, b) => b.target.length - a.target.length)[0];
    if (!m) return { rel: p };
    const rel = p === m.target ? "" : p.slice(m.target.length + 1);
    return { volume: m.volume, bind: m.bind, rel, mount: m };
  };
  const readConfigFor = (s: Svc) => (p: string): Content[] | undefined => {
    const r = volumeRel(s, posix.resolve("/", p));
    if (!r.bind) return undefined;
    const path = r.rel ? posix.join(r.bind, r.rel) : r.bind;
    if (files.has(path)) return [{ file: path, line: 1, text: files.get(path)! }];
    const under = [...files.keys()].filter((f) => f.startsWith(path + "/") && /\.(ya?ml|json)$/.test(f));
    return under.length ? under.map((f) => ({ file: f, line: 1, text: files.get(f)! })) : undefined;
  };

  for (const { s, inv } of invs) {
    const c = checkInvocation(inv, problems);
    if (!c) continue;
    report.commands.push(c);
    const e = effective(c, readConfigFor(s), problems, report.manifests);
    s.commands.push(c);
    s.effective.push(e);
    for (const w of [...e.writes, ...(inv.redirects ?? []).map((a) => ({ what: "> redirect", path: a.value, arg: a, dir: false }))]) {
      const r = volumeRel(s, posix.resolve(cwd(s), w.path));
      const at = w.arg ?? configArgOr(c);
      if (!r.mount) problems.push({ file: at.file, line: at.line, message: `${inv.where}: ${w.what} ${w.path} is on no volume: lost with the container` });
      else if (r.mount.readOnly) problems.push({ file: at.file, line: at.line, message: `${inv.where}: ${w.what} ${w.path} is on the read-only mount ${r.mount.target}` });
      else if (r.volume) producers.push({ volume: r.volume, rel: r.rel, dir: w.dir, by: s.name });
    }
  }

  // Reads: a bind-mounted recipe file, or a file some service writes into a shared volume it depends on.
  for (const s of svcs)
    s.commands.forEach((c, k) => {
      const e = s.effective[k]!;
      for (const r of e.reads) {
        const at = r.arg ?? configArgOr(c);
        const v = volumeRel(s, posix.resolve(cwd(s), r.path));
        const say = (msg: string) => problems.push({ file: at.file, line: at.line, message: `${c.inv.where}: ${r.what} ${r.path} ${msg}` });
        if (!v.mount) {
          say("is on no volume");
          continue;
        }
        if (v.bind) {
          if (!readConfigFor(s)(r.path) && !files.has(v.rel ? posix.join(v.bind, v.rel) : v.bind)) say(`is not in the recipe (${posix.join(v.bind, v.rel)})`);
          continue;
        }
        const made = producers.find((p) => p.volume === v.volume && p.rel === v.rel);
        if (!made) {
          say(`is written by no service: nothing puts ${v.rel || "(volume root)"} into volume ${v.volume} (writers: ${producers.filter((p) => p.volume === v.volume).map((p) => `${p.by} ${p.rel}`).join(", ") || "none"})`);
          continue;
        }
        if (made.by !== s.name) {
          // A one-shot writer must have finished; a long-running one (the control plane) be healthy.
          const oneShot = !byName.get(made.by)?.commands.some((x) => x.path === "mesh proxy" || x.path === "mesh control-plane");
          const want = oneShot ? "service_completed_successfully" : "service_healthy";
          const dep = obj(obj(s.body.depends_on)?.[made.by]);
          if (str(dep?.condition) !== want)
            problems.push({ file, line: s.line, message: `service ${s.name}: reads ${r.path}, written by ${made.by}, so it needs depends_on: { ${made.by}: { condition: ${want} } }` });
        }
      }
    });

  // Admin clients reach the control plane's loopback admin API only from inside its network namespace.
  const cpSvcs = svcs.filter((s) => s.commands.some((c) => c.path === "mesh control-plane"));
  for (const s of svcs)
    for (const c of s.commands) {
      if (!["mesh join-token", "mesh apply", "mesh get", "mesh delete", "mesh check"].includes(c.path) || last(c, "admin-url")) continue;
      const cp = cpSvcs.find((x) => x.name === s.netns);
      if (!cp) problems.push({ file: c.inv.file, line: c.inv.line, message: `${c.inv.where}: ${c.path} goes to http://127.0.0.1:15011; share the control plane's network (network_mode: "service:<control plane>") or give --admin-url` });
      else {
        const admin = cp.effective[cp.commands.findIndex((x) => x.path === "mesh control-plane")]!.listeners.find((l) => l.role === "admin")!;
        if (admin.port !== 15011 || !(isLoopback(admin.address) || WILDCARD.has(admin.address)))
          problems.push({ file: c.inv.file, line: c.inv.line, message: `${c.inv.where}: the control plane's admin API is on ${admin.address}:${admin.port}, not the default http://127.0.0.1:15011; give --admin-url` });
      }
    }

  // Sidecars: control plane by service name, advertise their own name, an app in their namespace, grace above the drain.
  const proxies: { c: Checked; e: Effective }[] = [];
  for (const s of svcs)
    s.commands.forEach((c, k) => {
      if (c.path !== "mesh proxy") return;
      const e = s.effective[k]!;
      proxies.push({ c, e });
      for (const u of e.controlPlanes) {
        const cp = cpSvcs.find((x) => x.name === u.hostname);
        const at = last(c, "control-plane")!;
        if (!cp) {
          problems.push({ file: at.file, line: at.line, message: `${c.inv.where}: --control-plane ${u.href}: no compose service ${u.hostname} runs mesh control-plane` });
          continue;
        }
        const cpe = cp.effective[cp.commands.findIndex((x) => x.path === "mesh control-plane")]!;
        for (const l of cpe.listeners.filter((x) => x.role !== "admin"))
          if (isLoopback(l.address)) problems.push({ file: at.file, line: at.line, message: `${c.inv.where}: the control plane's ${l.role} listener is on ${l.address}, out of other containers' reach` });
        checkControlPlanePorts(c, e, cpe, (port) => port, problems);
        if (!dependsOn(s.name, cp.name)) problems.push({ file, line: s.line, message: `service ${s.name}: does not depend on ${cp.name}, even indirectly; it would start before the control plane` });
      }
      const adv = last(c, "advertise");
      const inbound = e.listeners.find((l) => l.role === "inbound")!;
      if (e.controlPlanes.length && !adv && (WILDCARD.has(inbound.address) || isLoopback(inbound.address)))
        problems.push({ file: c.inv.file, line: c.inv.line, message: `${c.inv.where}: without --advertise the sidecar registers 127.0.0.1, which other containers cannot reach` });
      if (adv && isHost(adv.value) && !/^[\d.:]+$/.test(adv.value) && adv.value !== s.netns)
        problems.push({ file: adv.file, line: adv.line, message: `${c.inv.where}: --advertise ${adv.value} is not this sidecar's network name (${s.netns})` });
      const upstream = last(c, "upstream");
      if (upstream && URL.canParse(upstream.value) && isLoopback(new URL(upstream.value).hostname) && !svcs.some((x) => x !== s && x.netns === s.netns && x.name !== s.name))
        problems.push({ file: upstream.file, line: upstream.line, message: `${c.inv.where}: --upstream ${upstream.value} is on loopback but no app shares this sidecar's network (network_mode: "service:${s.netns}")` });
      const graceText = str(s.body.stop_grace_period) ?? "10s";
      const grace = safeDuration(graceText);
      const gl = findLine(text, (l) => /^\s*stop_grace_period:/.test(l), s.line);
      if (e.drainMs !== undefined && (grace === undefined || grace <= e.drainMs))
        problems.push({ file, line: gl ?? s.line, message: `service ${s.name}: stop_grace_period ${graceText}${s.body.stop_grace_period ? "" : " (compose's default)"} is not above the drain timeout ${e.drainMs / 1000}s; compose would SIGKILL a drain in progress` });
    });
  const cpe = cpSvcs[0] ? cpSvcs[0].effective[cpSvcs[0].commands.findIndex((x) => x.path === "mesh control-plane")] : undefined;
  if (cpe?.policiesDir) {
    const contents = readConfigFor(cpSvcs[0]!)(cpe.policiesDir) ?? [];
    checkServicesKnown(proxies, serviceNames(manifestsOf(contents, [], new Map())), `the control plane's policies (${cpe.policiesDir})`, problems);
  }
}
