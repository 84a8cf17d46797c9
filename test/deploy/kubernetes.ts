/** deploy/kubernetes: pods' mesh containers, their mounts, probes and Services, checked against the CLI. */
import { posix } from "node:path";
import { parseListen } from "../../src/cli/flags.ts";
import type { LoadedManifest } from "../../src/config/load.ts";
import {
  arr, checkControlPlanePorts, checkInvocation, checkServicesKnown, configArgOr, containing, effective, findLine, isLoopback, keyLine, last, locate,
  manifestsOf, num, obj, serviceNames, str, yamlDocs,
  type Arg, type Checked, type Content, type Effective, type Files, type Obj, type Report, type YamlDoc,
} from "./common.ts";

// ───────────────────────────── Kubernetes ─────────────────────────────

interface K8sObject {
  kind: string;
  name: string;
  namespace: string;
  doc: YamlDoc;
  body: Obj;
}

interface Mount {
  path: string;
  readOnly: boolean;
  volume: Obj | undefined;
  volumeName: string;
}

/** Representative values for the downward API, so substituted flags can be parsed. */
function fieldValue(path: string, pod: { name: string; namespace: string }): string | undefined {
  return (
    {
      "status.podIP": "10.244.1.23",
      "status.hostIP": "10.0.0.4",
      "metadata.namespace": pod.namespace,
      "metadata.name": pod.name,
      "spec.nodeName": "node-1",
      "spec.serviceAccountName": "default",
    } as Record<string, string>
  )[path];
}

export function checkKubernetes(files: Files, report: Report): void {
  const { problems } = report;
  const dir = "deploy/kubernetes/";
  const readme = files.get("deploy/README.md") ?? "";
  const objects: K8sObject[] = [];
  for (const [file, text] of files) {
    if (!file.startsWith(dir) || !/\.ya?ml$/.test(file)) continue;
    for (const doc of yamlDocs(file, text, problems)) {
      const body = obj(doc.value);
      const kind = str(body?.kind);
      const meta = obj(body?.metadata);
      if (!body || !kind || !str(meta?.name)) {
        problems.push({ file, line: doc.line, message: "not a Kubernetes object (kind and metadata.name)" });
        continue;
      }
      objects.push({ kind, name: str(meta!.name)!, namespace: str(meta!.namespace) ?? "default", doc, body });
    }
  }
  const find = (kind: string, name: string, namespace: string) => objects.find((o) => o.kind === kind && o.name === name && o.namespace === namespace);
  const fileText = (o: K8sObject) => files.get(o.doc.file)!;

  // Every mesh manifest inside a ConfigMap is valid.
  for (const cm of objects.filter((o) => o.kind === "ConfigMap")) {
    for (const [key, value] of Object.entries(obj(cm.body.data) ?? {})) {
      if (!/\.(ya?ml|json)$/.test(key) || typeof value !== "string") continue;
      const line = keyLine(fileText(cm), key, cm.doc.line) + 1;
      manifestsOf([{ file: `${cm.doc.file}#ConfigMap/${cm.name}/${key}`, line, text: value }], problems, report.manifests);
    }
  }

  const cpServices: { svc: K8sObject; cp: Effective; cpc: Checked; ports: Map<number, number> }[] = [];
  const proxies: { c: Checked; e: Effective; namespace: string }[] = [];
  const policyManifests: LoadedManifest[] = [];

  for (const o of objects) {
    const podSpec = o.kind === "Pod" ? obj(o.body.spec) : obj(obj(obj(o.body.spec)?.template)?.spec);
    if (!podSpec) continue;
    const podLabels = o.kind === "Pod" ? obj(obj(o.body.metadata)?.labels) : obj(obj(obj(obj(o.body.spec)?.template)?.metadata)?.labels);
    const text = fileText(o);
    const grace = num(podSpec.terminationGracePeriodSeconds) ?? 30;
    const graceLine = findLine(text, containing("terminationGracePeriodSeconds"), o.doc.line) ?? o.doc.line;
    const volumes = new Map(arr(podSpec.volumes).flatMap((v) => (obj(v) && str(obj(v)!.name) ? [[str(obj(v)!.name)!, obj(v)!] as const] : [])));
    const containers = [...arr(podSpec.initContainers), ...arr(podSpec.containers)].flatMap((x) => (obj(x) ? [obj(x)!] : []));
    const preStops = containers.map((ct) => preStopSeconds(obj(ct.lifecycle)));
    const maxPreStop = Math.max(0, ...preStops);
    if (maxPreStop >= grace)
      problems.push({ file: o.doc.file, line: graceLine, message: `${o.kind} ${o.namespace}/${o.name}: terminationGracePeriodSeconds ${grace} is not above a preStop of ${maxPreStop}s` });

    for (const ct of containers) {
      const cname = str(ct.name) ?? "?";
      const where = `${o.kind} ${o.namespace}/${o.name} container ${cname}`;
      const start = findLine(text, (l) => new RegExp(`^\\s*-\\s*name:\\s*["']?${cname}["']?\\s*$`).test(l), o.doc.line) ?? o.doc.line;
      const command = arr(ct.command).map(String);
      const args = arr(ct.args).map(String);
      const image = str(ct.image) ?? "";
      const isMesh = /(^|\/)mesh$/.test(command[0] ?? "");
      if (!isMesh) {
        if (/(^|\/)mesh(:|@|$)/.test(image)) problems.push({ file: o.doc.file, line: start, message: `${where}: image ${image} without a "mesh" command: say which subcommand it runs` });
        continue;
      }
      // $(VAR) from the container's env, in order, as the kubelet expands it.
      const env = new Map<string, string>();
      const pod = { name: o.name, namespace: o.namespace };
      for (const ev of arr(ct.env).flatMap((x) => (obj(x) ? [obj(x)!] : []))) {
        const n = str(ev.name);
        if (!n) continue;
        const from = obj(ev.valueFrom);
        const field = str(obj(from?.fieldRef)?.fieldPath);
        const cmRef = obj(from?.configMapKeyRef);
        const value =
          str(ev.value) !== undefined
            ? expandK8s(str(ev.value)!, env).value
            : field
              ? fieldValue(field, pod)
              : cmRef
                ? str(obj(find("ConfigMap", str(cmRef.name) ?? "", o.namespace)?.body.data)?.[str(cmRef.key) ?? ""])
                : obj(from?.secretKeyRef)
                  ? "secret-value"
                  : undefined;
        if (value === undefined) problems.push({ file: o.doc.file, line: findLine(text, containing(n), start) ?? start, message: `${where}: env ${n} has no value these checks can stand in for` });
        else env.set(n, value);
      }
      const raws = [...command, ...args];
      const cmdLine = findLine(text, (l) => /^\s*command:/.test(l), start) ?? start;
      const lines = locate(text, raws, cmdLine);
      const argv: Arg[] = raws.map((raw, k) => {
        const { value, missing } = expandK8s(raw, env);
        for (const m of missing) problems.push({ file: o.doc.file, line: lines[k]!, message: `${where}: $(${m}) is not defined in env, so the kubelet passes it literally` });
        return { value, file: o.doc.file, line: lines[k]! };
      });
      const c = checkInvocation({ where, file: o.doc.file, line: start, argv }, problems);
      if (!c) continue;
      report.commands.push(c);

      // Mounts, and what each path resolves to.
      const mounts: Mount[] = arr(ct.volumeMounts).flatMap((x) => {
        const m = obj(x);
        const path = str(m?.mountPath);
        const vname = str(m?.name);
        if (!m || !path || !vname) return [];
        if (!volumes.has(vname)) problems.push({ file: o.doc.file, line: findLine(text, containing(path), start) ?? start, message: `${where}: volumeMount ${path} names no volume "${vname}"` });
        return [{ path: path.replace(/\/$/, ""), readOnly: m.readOnly === true, volume: volumes.get(vname), volumeName: vname }];
      });
      const mountOf = (p: string) =>
        mounts.filter((m) => p === m.path || p.startsWith(m.path + "/")).sort((a, b) => b.path.length - a.path.length)[0];
      const readOnlyRoot = obj(ct.securityContext)?.readOnlyRootFilesystem === true;
      const resolve = (p: string, dirWanted: boolean): { ok: true; contents?: Content[]; mount?: Mount } | { ok: false; reason: string } => {
        const m = mountOf(p);
        if (!m) return { ok: false, reason: "is not on any volumeMount" };
        const rel = p === m.path ? "" : p.slice(m.path.length + 1);
        const cm = obj(m.volume?.configMap);
        const secret = obj(m.volume?.secret);
        const source = cm ?? secret;
        if (!source) return { ok: true, mount: m };
        const kindName = cm ? "ConfigMap" : "Secret";
        const srcName = str(cm ? cm.name : secret!.secretName) ?? "";
        const items = arr(source.items).flatMap((x) => (obj(x) ? [obj(x)!] : []));
        const keys = items.length ? items.map((it) => ({ key: str(it.key) ?? "", path: str(it.path) ?? "" })) : undefined;
        const defined = find(kindName, srcName, o.namespace);
        const data = obj(defined?.body.data) ?? {};
        if (rel === "") {
          if (!dirWanted) return { ok: false, reason: `is the ${kindName} ${srcName}'s mount directory, not a file in it` };
          if (!defined) return { ok: false, reason: `is the ${kindName} ${srcName}, which the recipes do not define` };
          const entries = keys ?? Object.keys(data).map((k) => ({ key: k, path: k }));
          return { ok: true, mount: m, contents: entries.flatMap((en) => (typeof data[en.key] === "string" && /\.(ya?ml|json)$/.test(en.path) ? [{ file: `${defined!.doc.file}#ConfigMap/${srcName}/${en.key}`, line: keyLine(fileText(defined!), en.key, defined!.doc.line) + 1, text: data[en.key] as string }] : [])) };
        }
        const key = keys ? keys.find((k) => k.path === rel)?.key : rel;
        if (key === undefined) return { ok: false, reason: `is not among the items of the ${kindName} ${srcName} mounted at ${m.path} (${keys!.map((k) => k.path).join(", ")})` };
        if (defined) {
          if (typeof data[key] !== "string") return { ok: false, reason: `: ${kindName} ${srcName} has no key ${key}` };
          return { ok: true, mount: m, contents: [{ file: `${defined.doc.file}#ConfigMap/${srcName}/${key}`, line: keyLine(fileText(defined), key, defined.doc.line) + 1, text: data[key] as string }] };
        }
        // Made by the operator: deploy/README.md must say how, with this name and key.
        const how = cm ? "create configmap" : "create secret";
        const told = readme.split("\n").some((l) => l.includes(how) && l.includes(` ${srcName} `) && l.includes(`--from-file=${key}=`));
        if (!told) return { ok: false, reason: `comes from the ${kindName} ${srcName} (key ${key}), which is neither in the recipe nor created by a "kubectl ${how}${secret ? " generic" : ""} ${srcName} … --from-file=${key}=…" line in deploy/README.md` };
        return { ok: true, mount: m };
      };
      const readConfig = (p: string) => {
        const r = resolve(p, true);
        return r.ok ? r.contents : undefined;
      };
      const e = effective(c, readConfig, problems, report.manifests);
      const blameAt = (x: { arg?: Arg }) => x.arg ?? configArgOr(c);
      for (const w of e.writes) {
        const b = blameAt(w);
        const abs = posix.resolve(str(ct.workingDir) ?? "/", w.path);
        const m = mountOf(abs);
        const say = (msg: string) => problems.push({ file: b.file, line: b.line, message: `${where}: ${w.what} ${abs} ${msg}` });
        if (!m) {
          if (readOnlyRoot) say("is not on a volume, and the root filesystem is read-only");
          else say("is not on a volume: it is lost whenever the container restarts");
        } else if (m.readOnly || m.volume?.configMap || m.volume?.secret) say(`is on the read-only mount ${m.path}`);
        else if (c.path === "mesh proxy" && w.what.startsWith("--certs-dir") && !m.volume?.emptyDir)
          say(`is on volume ${m.volumeName}, not an emptyDir: the workload key should never leave the pod`);
        else if (c.path === "mesh control-plane" && !m.volume?.persistentVolumeClaim)
          say(`is on volume ${m.volumeName}, not a PersistentVolumeClaim: the ${w.what.startsWith("ca") ? "CA" : "store"} would be lost with the pod`);
      }
      for (const r of e.reads) {
        const abs = posix.resolve(str(ct.workingDir) ?? "/", r.path);
        const res = resolve(abs, r.dir);
        const b = blameAt(r);
        if (!res.ok) problems.push({ file: b.file, line: b.line, message: `${where}: ${r.what} ${abs} ${res.reason}` });
        else if (c.path === "mesh control-plane" && r.what.startsWith("policiesDir") && res.contents) policyManifests.push(...manifestsOf(res.contents, [], new Map()));
      }
      if (c.path === "mesh control-plane" && last(c, "policies")) {
        const res = resolve(posix.resolve("/", last(c, "policies")!.value), true);
        if (res.ok && res.contents) policyManifests.push(...manifestsOf(res.contents, [], new Map()));
      }

      // The admin API holds /config_dump: probes and scrapers have the status listener for the pod network.
      const admin = e.listeners.find((l) => l.role === "admin");
      if (c.path === "mesh proxy" && admin && !isLoopback(admin.address)) {
        const b = last(c, "admin") ?? configArgOr(c);
        problems.push({ file: b.file, line: b.line, message: `${where}: the admin listener is on ${admin.address}, which exposes /config_dump to the pod network; keep it on loopback and give probes --status` });
      }

      // A postStart `mesh wait-ready` holds the containers after this one until the sidecar is ready.
      const hook = arr(obj(obj(obj(ct.lifecycle)?.postStart)?.exec)?.command).map(String);
      if (c.path === "mesh proxy" && hook.length) {
        const hookLine = findLine(text, (l) => /^\s*postStart:/.test(l), start) ?? start;
        const hookLines = locate(text, hook, hookLine);
        const w = checkInvocation({ where: `${where} postStart`, file: o.doc.file, line: hookLine, argv: hook.map((value, k) => ({ value, file: o.doc.file, line: hookLines[k]! })) }, problems);
        if (w) {
          report.commands.push(w);
          const say = (message: string) => problems.push({ file: o.doc.file, line: hookLines[0] ?? hookLine, message: `${where}: postStart ${message}` });
          let port = 15000;
          try {
            port = parseListen(last(w, "admin")?.value ?? "127.0.0.1:15000", "--admin").port;
          } catch {
            // A bad --admin is already reported by checkInvocation.
          }
          const l = e.listeners.find((x) => x.port === port && (x.role === "admin" || x.role === "status"));
          if (w.path !== "mesh wait-ready") say(`runs ${w.path}; only mesh wait-ready belongs there`);
          else if (!l) say(`waits on port ${port}, which is neither this sidecar's admin nor its status listener (${e.listeners.map((x) => `${x.role} ${x.port}`).join(", ")})`);
          const apps = arr(podSpec.containers).flatMap((x) => (obj(x) ? [str(obj(x)!.name) ?? "?"] : []));
          const own = apps.indexOf(cname);
          if (own > 0) say(`holds back only the containers listed after it, but ${apps.slice(0, own).join(", ")} come first`);
        }
      }

      // Ports: declared containerPorts are listeners, probes reach a listener the kubelet can see.
      const ports = new Map<string, number>();
      for (const p of arr(ct.ports).flatMap((x) => (obj(x) ? [obj(x)!] : []))) {
        const n = num(p.containerPort);
        if (n === undefined) continue;
        if (str(p.name)) ports.set(str(p.name)!, n);
        const l = e.listeners.find((x) => x.port === n);
        const line = findLine(text, (s) => s.includes(`containerPort: ${n}`), start) ?? start;
        if (!l) problems.push({ file: o.doc.file, line, message: `${where}: containerPort ${n} is none of ${c.path}'s listeners (${e.listeners.map((x) => `${x.role} ${x.port}`).join(", ")})` });
        else if (isLoopback(l.address)) problems.push({ file: o.doc.file, line, message: `${where}: containerPort ${n} is the ${l.role} listener, bound to ${l.address}: unreachable from outside the pod` });
      }
      for (const probeName of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const probe = obj(ct[probeName]);
        if (!probe) continue;
        const line = keyLine(text, probeName, start);
        const http = obj(probe.httpGet);
        const tcp = obj(probe.tcpSocket);
        const rawPort = (http ?? tcp)?.port;
        if (rawPort === undefined) continue;
        const port = typeof rawPort === "number" ? rawPort : ports.get(String(rawPort));
        const say = (msg: string) => problems.push({ file: o.doc.file, line, message: `${where}: ${probeName} ${msg}` });
        if (port === undefined) {
          say(`port ${String(rawPort)} is no named containerPort`);
          continue;
        }
        const l = e.listeners.find((x) => x.port === port);
        if (!l) say(`port ${port} is none of the listeners (${e.listeners.map((x) => `${x.role} ${x.port}`).join(", ")})`);
        else if (isLoopback(l.address)) say(`port ${port} is the ${l.role} listener on ${l.address}; the kubelet probes the pod IP`);
        else if (http) {
          const probed = e.listeners.filter((x) => x.role === "status" || x.role === "admin").map((x) => `${x.role} ${x.port}`).join(", ");
          if (l.role !== "admin" && l.role !== "status") say(`httpGet goes to the ${l.role} listener (${port}), but /live and /ready are on the status and admin listeners (${probed})`);
          const path = str(http.path) ?? "/";
          if (!["/live", "/ready"].includes(path)) say(`path ${path}: probes go to /live and /ready`);
        }
      }

      // Stopping: the grace period outlasts this container's preStop plus its drain.
      if (e.drainMs !== undefined) {
        const own = preStopSeconds(obj(ct.lifecycle));
        if (grace * 1000 <= own * 1000 + e.drainMs)
          problems.push({ file: o.doc.file, line: graceLine, message: `${where}: terminationGracePeriodSeconds ${grace} is not above preStop ${own}s + --drain-timeout ${e.drainMs / 1000}s; the kubelet would SIGKILL a drain in progress` });
      }
      if (c.path === "mesh proxy") proxies.push({ c, e, namespace: o.namespace });
      if (c.path === "mesh control-plane") {
        // The Services selecting this pod, with service port → container port.
        for (const svc of objects.filter((s) => s.kind === "Service" && s.namespace === o.namespace)) {
          const sel = obj(obj(svc.body.spec)?.selector) ?? {};
          if (!Object.keys(sel).length || !Object.entries(sel).every(([k, v]) => obj(podLabels)?.[k] === v)) continue;
          const map = new Map<number, number>();
          for (const sp of arr(obj(svc.body.spec)?.ports).flatMap((x) => (obj(x) ? [obj(x)!] : []))) {
            const port = num(sp.port);
            const t = sp.targetPort ?? port;
            const target = typeof t === "number" ? t : ports.get(String(t));
            if (port !== undefined && target !== undefined) map.set(port, target);
          }
          cpServices.push({ svc, cp: e, cpc: c, ports: map });
        }
      }
    }
  }

  // Services select pods and target ports that exist.
  for (const svc of objects.filter((s) => s.kind === "Service")) {
    const sel = obj(obj(svc.body.spec)?.selector) ?? {};
    const pods = objects.filter((p) => {
      if (p.namespace !== svc.namespace) return false;
      const labels = p.kind === "Pod" ? obj(obj(p.body.metadata)?.labels) : obj(obj(obj(obj(p.body.spec)?.template)?.metadata)?.labels);
      return Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => obj(labels)?.[k] === v);
    });
    if (!pods.length) {
      problems.push({ file: svc.doc.file, line: keyLine(fileText(svc), "selector", svc.doc.line), message: `Service ${svc.namespace}/${svc.name}: its selector matches no pod in the recipes` });
      continue;
    }
    for (const sp of arr(obj(svc.body.spec)?.ports).flatMap((x) => (obj(x) ? [obj(x)!] : []))) {
      const t = sp.targetPort ?? sp.port;
      const ok = pods.some((p) => {
        const spec = p.kind === "Pod" ? obj(p.body.spec) : obj(obj(obj(p.body.spec)?.template)?.spec);
        return arr(spec?.containers).some((ct) =>
          arr(obj(ct)?.ports).some((cp) => (typeof t === "number" ? obj(cp)?.containerPort === t : obj(cp)?.name === t)),
        );
      });
      if (!ok) problems.push({ file: svc.doc.file, line: findLine(fileText(svc), containing(`targetPort: ${String(t)}`), svc.doc.line) ?? svc.doc.line, message: `Service ${svc.namespace}/${svc.name}: targetPort ${String(t)} is no containerPort of the pods it selects` });
    }
  }

  // Sidecars reach a control plane Service, on its api port, and its bootstrap port.
  for (const { c, e, namespace } of proxies) {
    const targets = e.controlPlanes.map((u) => {
      const [svcName, ns = namespace] = u.hostname.replace(/\.svc(\.cluster\.local)?$/, "").split(".");
      const target = cpServices.find((s) => s.svc.name === svcName && s.svc.namespace === ns);
      const at = last(c, "control-plane") ?? c.inv;
      if (!target) problems.push({ file: at.file, line: at.line, message: `${c.inv.where}: --control-plane ${u.href}: no Service ${ns}/${svcName} in front of a mesh control-plane` });
      return target;
    });
    const first = targets[0];
    if (first) checkControlPlanePorts(c, e, first.cp, (port) => first.ports.get(port), problems);
  }
  checkServicesKnown(proxies, serviceNames(policyManifests), "the control plane's policies ConfigMap", problems);
}

function preStopSeconds(lifecycle: Obj | undefined): number {
  const pre = obj(lifecycle?.preStop);
  const sleep = num(obj(pre?.sleep)?.seconds);
  if (sleep !== undefined) return sleep;
  const cmd = arr(obj(pre?.exec)?.command).map(String);
  const i = cmd.findIndex((w) => /(^|\/)sleep$/.test(w));
  return i !== -1 && cmd[i + 1] !== undefined ? Number(cmd[i + 1]) || 0 : 0;
}

/** The kubelet's $(VAR) expansion: defined names are replaced, $$ escapes, others stay as written. */
function expandK8s(raw: string, env: Map<string, string>): { value: string; missing: string[] } {
  const missing: string[] = [];
  const value = raw.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name?: string) => {
    if (m === "$$") return "$";
    const v = env.get(name!);
    if (v === undefined) missing.push(name!);
    return v ?? m;
  });
  return { value, missing };
}
