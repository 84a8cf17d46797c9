/**
 * `mesh ca rotate --complete` asks a running control plane which sidecars would be locked out,
 * and the control plane answers from its view of the store. A view that stopped following the
 * store (its watch ended, its re-list fails) may miss sidecars registered through other
 * replicas meanwhile: --complete must refuse, say so, and write nothing to the CA directory.
 *
 * Real processes: a one-member etcd, a control plane on it, and, between the two, a relay in
 * this process that the test makes fail as a network or member would: it breaks the control
 * plane's watch stream and refuses its re-opening, and it answers lists as a member that
 * denies the read (etcd's PERMISSION_DENIED, as its gateway sends it: final, so a re-list
 * fails at once and is tried again with backoff), until it is told to relay again.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { cpSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { asCertificate, parseCertificatesAt } from "../../src/ca/authority.ts";
import { endpointKey } from "../../src/control-plane/keys.ts";
import type { EndpointRecord } from "../../src/control-plane/registration.ts";
import type { ViewSync } from "../../src/control-plane/view.ts";
import { mesh, tempDir } from "../helpers/cli.ts";
import { startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { etcdInstalled, startEtcdCluster, type EtcdCluster } from "../helpers/etcd.ts";
import { stopAll } from "../helpers/procs.ts";
import { eventually, until } from "../helpers/wait.ts";

/** An HTTP relay in front of one etcd member, that refuses what it is told to. */
function etcdRelay(member: string) {
  const live = new Set<AbortController>();
  const state = { cutWatches: false, denyRanges: false };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    // A watch stream is quiet between changes: not an idle connection to close.
    idleTimeout: 0,
    async fetch(req) {
      const url = new URL(req.url);
      if (url.pathname === "/v3/watch" && state.cutWatches) return new Response("relay: cut off", { status: 503 });
      if (url.pathname === "/v3/kv/range" && state.denyRanges)
        return Response.json({ error: "etcdserver: permission denied", code: 7, message: "etcdserver: permission denied" }, { status: 403 });
      const ctl = new AbortController();
      if (url.pathname === "/v3/watch") live.add(ctl);
      const body = req.method === "GET" || req.method === "HEAD" ? undefined : await req.arrayBuffer();
      const headers: Record<string, string> = {};
      for (const h of ["content-type", "grpc-metadata-hasleader"]) if (req.headers.has(h)) headers[h] = req.headers.get(h)!;
      const res = await fetch(member + url.pathname + url.search, { method: req.method, headers, body, signal: ctl.signal });
      const upstream = res.body!.getReader();
      // Cut (the member's side aborted): the stream ends where it is.
      const relayed = new ReadableStream<Uint8Array>({
        async pull(out) {
          const next = await upstream.read().catch(() => ({ done: true as const, value: undefined }));
          if (next.done) out.close();
          else out.enqueue(next.value);
        },
        cancel: () => ctl.abort(),
      });
      return new Response(relayed, { status: res.status, headers: { "content-type": res.headers.get("content-type") ?? "application/json" } });
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    state,
    /** Ends every watch stream now open, and refuses new ones until `state.cutWatches` is false. */
    cutWatches() {
      state.cutWatches = true;
      for (const c of live) c.abort();
      live.clear();
    },
    stop() {
      for (const c of live) c.abort();
      server.stop(true);
    },
  };
}

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
async function gateway<T>(member: string, path: string, body: unknown): Promise<T> {
  const res = await fetch(member + path, { method: "POST", body: JSON.stringify(body), signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`etcd ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** Every file under `dir`, by relative path, as its bytes (base64). */
function snapshot(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else files[relative(dir, path)] = readFileSync(path).toString("base64");
    }
  };
  walk(dir);
  return files;
}

const rootsIn = (path: string) => readFileSync(path, "utf8").split("BEGIN CERTIFICATE").length - 1;
const STALE_LINE = "has not followed its store since";

if (etcdInstalled("the stale-view --complete test")) {
  const tmp = tempDir("mesh-complete-stale-view-");
  let etcd: EtcdCluster;
  let relay: ReturnType<typeof etcdRelay>;
  let cp: TestControlPlane;
  /** The key of the intermediate that signed before the root rotation. */
  let oldSignerKeyId: string;

  beforeAll(async () => {
    etcd = await startEtcdCluster(1);
    relay = etcdRelay(etcd.endpoints[0]!);
    // A root rotation started before the control plane runs: it signs under the new root from its start,
    // and its bundle.pem trusts both roots.
    const caDir = join(tmp.path, "ca");
    expect((await mesh("ca", "init", "--out", caDir)).code).toBe(0);
    oldSignerKeyId = asCertificate(parseCertificatesAt(join(caDir, "intermediate.pem"), "intermediate")[0]!).known.subjectKeyId!;
    expect((await mesh("ca", "rotate", "--root", "--ca-dir", caDir)).code).toBe(0);
    cp = await startControlPlane(tmp.path, ["--store", "etcd", "--etcd-endpoint", relay.url]);
  }, 30_000);

  afterAll(async () => {
    try {
      await stopAll();
    } finally {
      relay?.stop();
      await etcd?.stop();
      tmp.cleanup();
    }
  });

  /** A sidecar registered through another replica, straight into etcd, on an hour-long leaf of the old intermediate. */
  async function registerOnOldRoot(port: number): Promise<void> {
    const record: EndpointRecord = {
      namespace: "default", service: "orders", address: "127.0.0.1", port, weight: 1,
      identity: "spiffe://mesh.local/ns/default/sa/orders", healthy: true,
      certificate: { issuerKeyId: oldSignerKeyId, notAfter: new Date(Date.now() + 3600_000).toISOString() },
    };
    await gateway(etcd.endpoints[0]!, "/v3/kv/put", { key: b64(endpointKey("default", "orders", "127.0.0.1", port)), value: b64(JSON.stringify(record)) });
  }

  const status = async () => (await (await cp.admin("GET", "/v1/status")).json()) as { view: ViewSync };
  const complete = (caDir = cp.caDir) => mesh("ca", "rotate", "--ca-dir", caDir, "--complete", ...cp.adminFlags);

  test("--complete is refused while the replica's view has not followed its store, writing nothing; once it follows again, the sidecar it had missed blocks instead", async () => {
    expect(rootsIn(cp.bundle)).toBe(2);
    expect((await status()).view.synced).toBe(true);
    // Nothing stands in the way now: on a copy of the CA directory, --complete is accepted.
    const copy = join(tmp.path, "ca-copy");
    cpSync(cp.caDir, copy, { recursive: true });
    const accepted = await complete(copy);
    expect({ code: accepted.code, err: accepted.err, bundleRoots: rootsIn(join(copy, "bundle.pem")) }).toEqual({ code: 0, err: "", bundleRoots: 1 });

    // A partition: the replica loses its watch, and its lists are refused (as a member that denies
    // the read answers: final, so each re-list fails at once and is tried again). Meanwhile another
    // replica registers a sidecar whose leaf the old intermediate signed.
    const from = cp.stderr().length;
    relay.state.denyRanges = true;
    relay.cutWatches();
    expect(await until(() => cp.stderr().slice(from).includes("watch stream ended, reopening"), 10_000)).toBe(true);
    await registerOnOldRoot(41_999);
    let stale: ViewSync | undefined;
    expect(await eventually(async () => (stale = (await status()).view).failedRelists >= 1, 10_000, 50)).toBe(true);
    expect(stale).toMatchObject({ synced: false, error: expect.stringContaining("permission denied") });
    expect(cp.stderr().slice(from)).toContain("store watch ended; listing again");

    const before = snapshot(cp.caDir);
    const refused = await complete();
    expect(refused.code).toBe(1);
    expect(refused.err).toContain(`${STALE_LINE} ${stale!.staleSince}, so its list of sidecars may be out of date: etcd: etcdserver: permission denied`);
    // It could not have named the sidecar it does not know of.
    expect(refused.err).not.toContain("default/orders at");
    expect(snapshot(cp.caDir)).toEqual(before);
    expect(rootsIn(cp.bundle)).toBe(2);

    // The member answers again: the view re-lists, follows the store, and sees the sidecar it had missed.
    relay.state.denyRanges = false;
    relay.state.cutWatches = false;
    expect(await eventually(async () => (await status()).view.synced, 10_000, 50)).toBe(true);
    const again = await complete();
    expect(again.code).toBe(1);
    expect(again.err).not.toContain(STALE_LINE);
    expect(again.err).toContain("1 sidecar holds a certificate that does not chain to the current root");
    expect(again.err).toContain("default/orders at 127.0.0.1:41999");
    expect(snapshot(cp.caDir)).toEqual(before);
  }, 30_000);

  // A watch cut while the store answers lists: the stream it reopens would replay what it missed,
  // but nothing says when that is done, so the view lists again at once and is current from then.
  test("a watch that loses its connection makes the view list again: a sidecar registered while the watch stays down is seen, and blocks --complete", async () => {
    expect(await eventually(async () => (await status()).view.synced, 10_000, 50)).toBe(true);
    const from = cp.stderr().length;
    relay.cutWatches();
    expect(await until(() => cp.stderr().slice(from).includes("store watch ended; listing again"), 10_000)).toBe(true);
    await registerOnOldRoot(41_998);
    const before = snapshot(cp.caDir);
    // The watch is still refused; the lists that follow each loss find the sidecar.
    let seen = { code: 0, out: "", err: "" };
    expect(await eventually(async () => (seen = await complete()).err.includes("default/orders at 127.0.0.1:41998"), 10_000, 100)).toBe(true);
    expect(seen.code).toBe(1);
    expect(snapshot(cp.caDir)).toEqual(before);
    relay.state.cutWatches = false;
    expect(await eventually(async () => (await status()).view.synced, 10_000, 50)).toBe(true);
  }, 30_000);
}
