/**
 * The recipes in deploy/ stay runnable: every `mesh …` line parses with today's CLI, every
 * embedded manifest validates, and the recipes agree with themselves (mounts, ports, probes,
 * stop timeouts, who writes what). The "breaks" table proves each kind of check can fail,
 * naming the file and line, by breaking an in-memory copy of a recipe.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  checkAll,
  formatProblem,
  loadFiles,
  parseEnvFile,
  shellWords,
  systemdSeconds,
  systemdWords,
  type Files,
  type Problem,
} from "./recipes.ts";

const ROOT = join(import.meta.dir, "../..");
const files = loadFiles(ROOT);
const report = checkAll(files);

describe("deploy/ recipes", () => {
  test("have no problems", () => {
    expect(report.problems.map(formatProblem)).toEqual([]);
  });

  test("every recipe's mesh command lines were found and checked", () => {
    const where = report.commands.map((c) => `${c.inv.where} → ${c.path}`);
    expect(where).toEqual(
      expect.arrayContaining([
        "mesh-control-plane.service ExecStart → mesh control-plane",
        "mesh-proxy@orders.service ExecStart → mesh proxy",
        "mesh-proxy@payments.service ExecStart → mesh proxy",
        "Deployment mesh-system/mesh-control-plane container control-plane → mesh control-plane",
        "Deployment default/orders container mesh-proxy → mesh proxy",
        "Deployment default/orders container mesh-proxy postStart → mesh wait-ready",
        "compose service control-plane → mesh control-plane",
        "compose service control-plane healthcheck → mesh get",
        "compose service mesh-init → mesh ca bundle",
        "compose service mesh-init → mesh join-token",
        "compose service orders → mesh proxy",
        "compose service orders healthcheck → mesh wait-ready",
        "compose service payments → mesh proxy",
        "deploy/README.md → mesh join-token",
        "deploy/README.md → mesh check",
      ]),
    );
    // The env file's EXTRA_ARGS were split into flags and parsed too.
    const orders = report.commands.find((c) => c.inv.where === "mesh-proxy@orders.service ExecStart")!;
    expect(orders.args.flags).toMatchObject({ service: "orders", calls: ["payments"], "health-path": "/healthz", "join-token-file": "/run/credentials/mesh-proxy@orders.service/join-token" });
    const pod = report.commands.find((c) => c.inv.where === "Deployment default/orders container mesh-proxy")!;
    expect(pod.args.flags).toMatchObject({ namespace: "default", advertise: "10.244.1.23" });
  });

  test("every embedded mesh manifest was validated", () => {
    expect([...report.manifests.keys()].sort()).toEqual([
      "deploy/compose/policies/services.yaml",
      "deploy/kubernetes/control-plane.yaml#ConfigMap/mesh-control-plane-config/control-plane.yaml",
      "deploy/kubernetes/control-plane.yaml#ConfigMap/mesh-policies/services.yaml",
      "deploy/systemd/control-plane.yaml",
      "deploy/systemd/policies/services.yaml",
    ]);
    for (const n of report.manifests.values()) expect(n).toBeGreaterThan(0);
  });
});

interface Break {
  name: string;
  file: string;
  find: string;
  replace: string;
  /** Which occurrence of `find` to break (0-based); default the first. */
  nth?: number;
  /** The problem's message contains this. */
  expect: string;
  /** The problem is in this file (default: `file`)… */
  at?: string;
  /** …on the line holding this: in `at`, its first; in `file`, the first at or after the break (default: the broken line). */
  atLine?: string;
}

const BREAKS: Break[] = [
  // systemd
  { name: "unknown flag in ExecStart", file: "deploy/systemd/mesh-proxy@.service", find: "--upstream ${UPSTREAM}", replace: "--upstrem ${UPSTREAM}", expect: "unknown flag --upstrem" },
  { name: "unknown subcommand in ExecStart", file: "deploy/systemd/mesh-control-plane.service", find: "mesh control-plane --config", replace: "mesh controlplane --config", expect: 'unknown command "controlplane"' },
  { name: "unknown flag in an env file's EXTRA_ARGS", file: "deploy/systemd/proxy-orders.env", find: "--health-path /healthz", replace: "--healthpath /healthz", expect: "unknown flag --healthpath" },
  { name: "bad value in an env file", file: "deploy/systemd/proxy-orders.env", find: "DRAIN_TIMEOUT=30s", replace: "DRAIN_TIMEOUT=30", expect: "has no unit" },
  { name: "variable the env file does not set", file: "deploy/systemd/mesh-proxy@.service", find: "--advertise ${ADVERTISE}", replace: "--advertise ${ADVERTISE_ADDRESS}", expect: "${ADVERTISE_ADDRESS} is not set" },
  { name: "TimeoutStopSec below the drain", file: "deploy/systemd/mesh-proxy@.service", find: "TimeoutStopSec=45s", replace: "TimeoutStopSec=20s", expect: "not above the drain timeout 30s" },
  { name: "certs outside the StateDirectory", file: "deploy/systemd/mesh-proxy@.service", find: "--certs-dir /var/lib/mesh/%i", replace: "--certs-dir /etc/mesh/%i", expect: "read-only under ProtectSystem=strict" },
  { name: "control plane state outside the StateDirectory", file: "deploy/systemd/control-plane.yaml", find: "dataDir: /var/lib/mesh/control-plane/data", replace: "dataDir: /srv/mesh/data", expect: "dataDir (--config) /srv/mesh/data is read-only", at: "deploy/systemd/mesh-control-plane.service", atLine: "--config" },
  { name: "invalid ControlPlaneConfig field", file: "deploy/systemd/control-plane.yaml", find: "leaseTtl: 10s", replace: "leaseTTL: 10s", expect: 'unknown field "leaseTTL"' },
  { name: "token path without its LoadCredential", file: "deploy/systemd/mesh-proxy@.service", find: "--join-token-file %d/join-token", replace: "--join-token-file %d/token", expect: "no LoadCredential=token" },
  { name: "two instances on one port", file: "deploy/systemd/proxy-payments.env", find: "ADMIN=127.0.0.1:15100", replace: "ADMIN=127.0.0.1:15000", expect: "admin port 15000 is also mesh-proxy@orders.service's admin" },
  { name: "sidecar dials a port that is not the api", file: "deploy/systemd/proxy-orders.env", find: "CONTROL_PLANE=https://10.0.0.5:15010", replace: "CONTROL_PLANE=https://10.0.0.5:15011", expect: "does not reach the control plane's api listener" },
  { name: "bootstrap moved off 15012", file: "deploy/systemd/control-plane.yaml", find: "port: 15012", replace: "port: 15013", expect: "does not reach the control plane's bootstrap listener (15013)", at: "deploy/systemd/proxy-orders.env", atLine: "CONTROL_PLANE=" },
  { name: "--calls a service with no Service manifest", file: "deploy/systemd/proxy-orders.env", find: "--calls payments", replace: "--calls billing", expect: "no Service billing.default" },
  // Kubernetes
  { name: "unknown flag in a container's args", file: "deploy/kubernetes/control-plane.yaml", find: "--log-level, info]", replace: "--log-levle, info]", expect: "unknown flag --log-levle" },
  { name: "status on loopback but probed by the kubelet", file: "deploy/kubernetes/orders.yaml", find: "- 0.0.0.0:15021", replace: "- 127.0.0.1:15021", expect: "the kubelet probes the pod IP", atLine: "startupProbe" },
  { name: "probe on the wrong port", file: "deploy/kubernetes/orders.yaml", find: "httpGet: { path: /ready, port: mesh-status }", replace: "httpGet: { path: /ready, port: mesh-mtls }", expect: "httpGet goes to the inbound listener", at: "deploy/kubernetes/orders.yaml", atLine: "readinessProbe:" },
  { name: "postStart waits on no listener of the sidecar", file: "deploy/kubernetes/orders.yaml", find: "--admin, 127.0.0.1:15000, --timeout", replace: "--admin, 127.0.0.1:15999, --timeout", expect: "postStart waits on port 15999, which is neither this sidecar's admin nor its status listener" },
  { name: "postStart on a sidecar listed after the app", file: "deploy/kubernetes/orders.yaml", find: "      containers:\n        - name: mesh-proxy", replace: "      containers:\n        - name: early\n          image: busybox:1.36\n        - name: mesh-proxy", expect: "holds back only the containers listed after it, but early come first", atLine: "command: [mesh, wait-ready" },
  { name: "admin API on the pod network", file: "deploy/kubernetes/orders.yaml", find: "- 127.0.0.1:15000", replace: "- 0.0.0.0:15000", expect: "exposes /config_dump to the pod network", atLine: "- 0.0.0.0:15000" },
  { name: "grace period below the drain", file: "deploy/kubernetes/orders.yaml", find: "terminationGracePeriodSeconds: 45", replace: "terminationGracePeriodSeconds: 30", expect: "not above preStop 0s + --drain-timeout 30s" },
  { name: "trust bundle path not mounted", file: "deploy/kubernetes/orders.yaml", find: "- /var/run/mesh/trust/bundle.pem", replace: "- /var/run/mesh/ca/bundle.pem", expect: "is not on any volumeMount" },
  { name: "undefined $(VAR)", file: "deploy/kubernetes/orders.yaml", find: "- $(POD_IP)", replace: "- $(POD_ADDRESS)", expect: "$(POD_ADDRESS) is not defined in env" },
  { name: "invalid Service in the policies ConfigMap", file: "deploy/kubernetes/control-plane.yaml", find: "ports: [{ name: http, port: 80 }]", replace: "ports: [{ name: http, prt: 80 }]", expect: 'unknown field "prt"' },
  { name: "bootstrap port missing from the control plane Service", file: "deploy/kubernetes/control-plane.yaml", find: "{ name: bootstrap, port: 15012, targetPort: bootstrap }", replace: "{ name: bootstrap, port: 15013, targetPort: bootstrap }", expect: "does not reach the control plane's bootstrap listener", at: "deploy/kubernetes/orders.yaml", atLine: "- https://mesh-control-plane" },
  { name: "certs on a volume that is not an emptyDir", file: "deploy/kubernetes/orders.yaml", find: "emptyDir: { medium: Memory, sizeLimit: 1Mi }", replace: "hostPath: { path: /var/lib/mesh-certs }", expect: "not an emptyDir", at: "deploy/kubernetes/orders.yaml", atLine: "- /var/run/mesh/certs" },
  { name: "CA not on the PersistentVolumeClaim", file: "deploy/kubernetes/control-plane.yaml", find: "ca: { dir: /var/lib/mesh/ca }", replace: "ca: { dir: /tmp/ca }", expect: "ca.dir (--config) /tmp/ca is on volume tmp, not a PersistentVolumeClaim", atLine: "--config" },
  { name: "Secret the README does not create", file: "deploy/README.md", find: "--from-file=token=orders.token", replace: "--from-file=jwt=orders.token", expect: "Secret orders-join-token (key token)", at: "deploy/kubernetes/orders.yaml", atLine: "- /var/run/mesh/join-token/token" },
  // Compose
  { name: "unknown flag in a compose command list", file: "deploy/compose/compose.yaml", find: "- --calls", replace: "- --call", expect: "unknown flag --call" },
  { name: "unknown flag in the init script", file: "deploy/compose/compose.yaml", find: "mesh join-token --service payments --ttl 1h", replace: "mesh join-token --service payments --tll 1h", expect: "unknown flag --tll" },
  { name: "drain longer than stop_grace_period", file: "deploy/compose/compose.yaml", find: "- 30s", nth: 1, replace: "- 60s", expect: "stop_grace_period 45s is not above the drain timeout 60s", atLine: "stop_grace_period" },
  { name: "a token nobody writes", file: "deploy/compose/compose.yaml", find: "> /bootstrap/orders.token", replace: "> /bootstrap/order.token", expect: "nothing puts orders.token into volume bootstrap", atLine: "- /bootstrap/orders.token" },
  { name: "admin client outside the control plane's network", file: "deploy/compose/compose.yaml", find: '    network_mode: "service:control-plane"\n', replace: "", expect: "goes to http://127.0.0.1:15011", atLine: "mesh join-token --service orders" },
  { name: "advertising another service's name", file: "deploy/compose/compose.yaml", find: "- --advertise\n      - orders", replace: "- --advertise\n      - payments", expect: "--advertise payments is not this sidecar's network name (orders)", atLine: "- payments" },
  { name: "sidecar not waiting for the init step", file: "deploy/compose/compose.yaml", find: "mesh-init: { condition: service_completed_successfully }", replace: "mesh-init: { condition: service_started }", expect: "needs depends_on: { mesh-init: { condition: service_completed_successfully } }", at: "deploy/compose/compose.yaml", atLine: "  orders:\n" },
  // README
  { name: "unknown subcommand in the README", file: "deploy/README.md", find: "-- mesh check --admin-token-file", replace: "-- mesh chek --admin-token-file", expect: 'unknown command "chek"' },
];

function lineOf(text: string, index: number): number {
  return text.slice(0, index).split("\n").length;
}

function nthIndex(text: string, find: string, nth: number): number {
  let i = -1;
  for (let k = 0; k <= nth; k++) {
    i = text.indexOf(find, i + 1);
    if (i === -1) return -1;
  }
  return i;
}

describe("a broken recipe fails with its file and line", () => {
  test.each(BREAKS.map((b) => [b.name, b] as const))("%s", (_name, b) => {
    const text = files.get(b.file);
    expect(text).toBeDefined();
    const index = nthIndex(text!, b.find, b.nth ?? 0);
    expect(index).not.toBe(-1);
    const broken: Files = new Map(files);
    const mutated = text!.slice(0, index) + b.replace + text!.slice(index + b.find.length);
    broken.set(b.file, mutated);
    const problems = checkAll(broken).problems;
    const file = b.at ?? b.file;
    let line = lineOf(mutated, index);
    if (b.atLine !== undefined) {
      // In another file: its first line holding atLine; in this one: the first at or after the break.
      const target = broken.get(file)!;
      const hit = target.indexOf(b.atLine, b.at ? 0 : target.lastIndexOf("\n", index) + 1);
      expect(hit).not.toBe(-1);
      line = lineOf(target, hit);
    }
    const match = (p: Problem) => p.file === file && p.line === line && p.message.includes(b.expect);
    if (!problems.some(match)) throw new Error(`expected ${file}:${line}: …${b.expect}…, got:\n${problems.map(formatProblem).join("\n") || "(no problems)"}`);
  });
});

describe("recipe parsers", () => {
  test("systemd words: quotes and escapes; ${VAR} and $VAR stay for expansion", () => {
    expect(systemdWords(`/bin/mesh proxy "a b" 'c d' e\\ f \${X} $Y`).map((w) => w.text)).toEqual(["/bin/mesh", "proxy", "a b", "c d", "e f", "${X}", "$Y"]);
  });
  test("systemd time spans", () => {
    expect([systemdSeconds("45s"), systemdSeconds("1min 30s"), systemdSeconds("90"), systemdSeconds("2h"), systemdSeconds("soon")]).toEqual([45, 90, 90, 7200, undefined]);
  });
  test("env files: KEY=VALUE, comments, quotes; shell syntax is reported", () => {
    const problems: Problem[] = [];
    const env = parseEnvFile("x.env", "# c\nA=1\nB=\"two words\"\n\nC=$HOME\nexport D=4\n", problems);
    expect([...env].map(([k, v]) => [k, v.value, v.line])).toEqual([["A", "1", 2], ["B", "two words", 3], ["C", "$HOME", 5]]);
    expect(problems.map((p) => p.line)).toEqual([5, 6]);
  });
  test("shell words: quotes, redirections and operators", () => {
    expect(shellWords(`mesh join-token --service "a b" > out.token 2>/dev/null && echo 'x # y' # comment`)).toEqual([
      "mesh", "join-token", "--service", "a b", ">", "out.token", "2>", "/dev/null", "&&", "echo", "x # y",
    ]);
  });
});

// systemd's own parser, where there is one: unknown directives, bad values, bad specifiers.
const analyze = Bun.which("systemd-analyze");
test.skipIf(!analyze)("systemd-analyze verify accepts the units", () => {
  const dir = mkdtempSync(join(tmpdir(), "mesh-units-"));
  try {
    const names: string[] = [];
    for (const [file, text] of files) {
      if (!file.startsWith("deploy/systemd/") || !file.endsWith(".service")) continue;
      const name = file.slice("deploy/systemd/".length).replace("@.", "@orders.");
      writeFileSync(join(dir, name), text);
      names.push(name);
    }
    const run = Bun.spawnSync([analyze!, "verify", "--man=no", ...names.map((n) => join(dir, n))], { cwd: dir, stderr: "pipe", stdout: "pipe" });
    const out = (run.stderr.toString() + run.stdout.toString())
      .split("\n")
      .filter((l) => l.trim() && !/Command \/usr\/local\/bin\/mesh is not executable/.test(l)) // the binary is not installed here
      .map((l) => l.replaceAll(dir + "/", "deploy/systemd/").replace("@orders.service", "@.service"));
    expect(out).toEqual([]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
