/**
 * Real etcd clusters on loopback for the store tests: free ports, a temporary data
 * directory per member, and every process stopped by its pid (never by name). With `tls`,
 * members serve clients over TLS and ask each for a certificate (--client-cert-auth), as
 * a production cluster does; the certificates are made with openssl.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { test } from "bun:test";
import { freePorts } from "./ports.ts";

export const ETCD_BIN = process.env.ETCD_BIN ?? Bun.which("etcd") ?? "/usr/bin/etcd";

/** Why etcd tests cannot run here, or undefined when they can. */
export function etcdMissing(): string | undefined {
  if (existsSync(ETCD_BIN)) return undefined;
  return `etcd not found (looked for ${ETCD_BIN}; set ETCD_BIN or install it: apt-get install -y etcd-server — .ci/run does)`;
}

/**
 * Whether the etcd tests of this file can run. When they cannot, a failing test says why
 * (a missing etcd must fail CI, not skip silently), and the caller registers no others.
 */
export function etcdInstalled(what: string): boolean {
  const missing = etcdMissing();
  if (missing === undefined) return true;
  test("etcd is installed", () => {
    throw new Error(`${what} need a real etcd: ${missing}`);
  });
  return false;
}

export interface EtcdMember {
  name: string;
  clientUrl: string;
  proc: Subprocess<"ignore", "ignore", "ignore">;
  pid: number;
}

/** Files (paths) for a TLS cluster: the CA that signed the members' and the client's certificates. */
export interface EtcdTlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export interface EtcdCluster {
  members: EtcdMember[];
  endpoints: string[];
  /** With `tls`: the client's CA, certificate and key (what a control plane is given). */
  clientTls?: EtcdTlsFiles;
  /** SIGKILLs member `i` and waits until it has exited. */
  kill(i: number): Promise<void>;
  /** SIGSTOPs member `i`: it keeps its sockets open and answers nothing, like a hung host. */
  pause(i: number): void;
  /** SIGCONTs member `i`. */
  resume(i: number): void;
  /** The member currently leading, by index. */
  leader(): Promise<number>;
  /** Kills every member by pid, waits for each to exit and removes the data directories. */
  stop(): Promise<void>;
}

// Short raft timings so an election after a kill takes well under a second. They also set
// etcd's minimum lease TTL: ceil(1.5 × election timeout) = 1 s here (2 s with the defaults).
const HEARTBEAT_MS = 50;
const ELECTION_MS = 500;
/**
 * Operations one transaction may hold, raised from etcd's 128 as README advises for the
 * control plane's etcd: an apply of N manifests is one transaction of N + 1 operations.
 */
export const MAX_TXN_OPS = 1_024;

/** Every pid this helper started, so a test can prove none outlived it. */
export const startedPids = new Set<number>();

/** Whether a process with this pid exists (signal 0 checks without signalling). */
export { pidAlive } from "./procs.ts";

/** `quotaBackendBytes`: etcd's space quota; past it the cluster raises its NOSPACE alarm and refuses writes. */
export async function startEtcdCluster(size: number, opts: { tls?: boolean; quotaBackendBytes?: number } = {}): Promise<EtcdCluster> {
  const missing = etcdMissing();
  if (missing) throw new Error(missing);
  // tmpfs when there is one: etcd fsyncs every commit, and the tests are about failover, not disks.
  const base = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "mesh-etcd-"));
  const tls = opts.tls ? etcdCertificates(base) : undefined;
  const ports = freePorts(size * 2);
  const names = Array.from({ length: size }, (_, i) => `m${i}`);
  const peerUrl = (i: number) => `http://127.0.0.1:${ports[size + i]}`;
  const initialCluster = names.map((n, i) => `${n}=${peerUrl(i)}`).join(",");
  const serverTls = tls ? ["--cert-file", tls.server.cert, "--key-file", tls.server.key, "--trusted-ca-file", tls.client.ca, "--client-cert-auth"] : [];
  const quota = opts.quotaBackendBytes === undefined ? [] : ["--quota-backend-bytes", String(opts.quotaBackendBytes)];
  const members: EtcdMember[] = names.map((name, i) => {
    const clientUrl = `${tls ? "https" : "http"}://127.0.0.1:${ports[i]}`;
    const proc = Bun.spawn(
      [ETCD_BIN, "--name", name, "--data-dir", join(base, name), ...serverTls,
        "--listen-client-urls", clientUrl, "--advertise-client-urls", clientUrl,
        "--listen-peer-urls", peerUrl(i), "--initial-advertise-peer-urls", peerUrl(i),
        "--initial-cluster", initialCluster, "--initial-cluster-state", "new", "--initial-cluster-token", `mesh-test-${ports[0]}`,
        "--heartbeat-interval", String(HEARTBEAT_MS), "--election-timeout", String(ELECTION_MS), "--max-txn-ops", String(MAX_TXN_OPS), ...quota,
        "--logger", "zap", "--log-level", "warn", "--log-outputs", join(base, `${name}.log`)],
      { stdin: "ignore", stdout: "ignore", stderr: "ignore" },
    );
    startedPids.add(proc.pid);
    return { name, clientUrl, proc, pid: proc.pid };
  });

  // SIGKILL, not SIGTERM: the data is thrown away, and a stopping leader first tries to hand
  // over leadership, which waits out timeouts once a peer is gone.
  const stop = async () => {
    for (const m of members) m.proc.kill("SIGKILL");
    await Promise.all(members.map((m) => m.proc.exited));
    rmSync(base, { recursive: true, force: true });
  };

  const request = (url: string, init: RequestInit = {}) => fetch(url, tls ? { ...init, tls: { ca: readFileSync(tls.client.ca, "utf8"), cert: readFileSync(tls.client.cert, "utf8"), key: readFileSync(tls.client.key, "utf8") } } : init);
  try {
    await waitHealthy(members, base, request);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    members,
    endpoints: members.map((m) => m.clientUrl),
    clientTls: tls?.client,
    async kill(i) {
      members[i]!.proc.kill("SIGKILL");
      await members[i]!.proc.exited;
    },
    pause(i) {
      members[i]!.proc.kill("SIGSTOP");
    },
    resume(i) {
      members[i]!.proc.kill("SIGCONT");
    },
    async leader() {
      for (const [i, m] of members.entries()) {
        if (m.proc.exitCode !== null || m.proc.signalCode !== null) continue;
        const s = (await (await request(`${m.clientUrl}/v3/maintenance/status`, { method: "POST", body: "{}" })).json()) as { header: { member_id: string }; leader: string };
        if (s.header.member_id === s.leader) return i;
      }
      throw new Error("no member is leading");
    },
    stop,
  };
}

async function waitHealthy(members: EtcdMember[], base: string, request: (url: string, init?: RequestInit) => Promise<Response>): Promise<void> {
  const deadline = performance.now() + 20_000;
  for (const m of members) {
    for (;;) {
      if (m.proc.exitCode !== null || m.proc.signalCode !== null)
        throw new Error(`etcd ${m.name} exited (${m.proc.exitCode ?? m.proc.signalCode}):\n${readLog(base, m.name)}`);
      try {
        const r = await request(`${m.clientUrl}/health`, { signal: AbortSignal.timeout(1_000) });
        if (r.ok && ((await r.json()) as { health?: string }).health === "true") break;
      } catch {
        // not listening yet
      }
      if (performance.now() > deadline) throw new Error(`etcd ${m.name} not healthy after 20 s:\n${readLog(base, m.name)}`);
      await Bun.sleep(50);
    }
  }
}

function readLog(base: string, name: string): string {
  try {
    return readFileSync(join(base, `${name}.log`), "utf8").slice(-4_000);
  } catch {
    return "(no log)";
  }
}

/**
 * A CA, a server certificate for 127.0.0.1 (every member's) and a client certificate, by
 * openssl, in `dir`: EC P-256, one day.
 */
function etcdCertificates(dir: string): { server: { cert: string; key: string }; client: EtcdTlsFiles } {
  const at = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => {
    const r = Bun.spawnSync(["openssl", ...args], { stderr: "pipe", stdout: "ignore" });
    if (r.exitCode !== 0) throw new Error(`openssl ${args[0]}: ${r.stderr.toString()}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", at("ca.key"), "-out", at("ca.pem"), "-days", "1", "-subj", "/CN=etcd test CA");
  writeFileSync(at("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n");
  writeFileSync(at("client.ext"), "extendedKeyUsage=clientAuth\n");
  for (const who of ["server", "client"]) {
    openssl("req", ...ec, "-keyout", at(`${who}.key`), "-out", at(`${who}.csr`), "-subj", `/CN=etcd ${who}`);
    openssl("x509", "-req", "-in", at(`${who}.csr`), "-CA", at("ca.pem"), "-CAkey", at("ca.key"), "-CAcreateserial", "-days", "1", "-extfile", at(`${who}.ext`), "-out", at(`${who}.pem`));
  }
  return { server: { cert: at("server.pem"), key: at("server.key") }, client: { ca: at("ca.pem"), cert: at("client.pem"), key: at("client.key") } };
}
