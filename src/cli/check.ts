/**
 * `mesh check`: is the mesh healthy, and if not, what to do. Each line is a pass or a
 * fail; every fail says how to fix it. Exit 0 only when every line passes.
 */
import { loadWorkloadCerts } from "../proxy/certs.ts";
import { printable } from "../core/printable.ts";
import type { ControlPlaneStatus } from "../control-plane/api/admin-api.ts";
import type { AuditCounts } from "../control-plane/audit.ts";
import type { ProxyStatus } from "../control-plane/registration.ts";
import { MeshError } from "../core/errors.ts";
import { str, type CommandSpec } from "./args.ts";
import { ADMIN_FLAGS, adminClient, AdminTokenRefused, type AdminClient } from "./admin-client.ts";
import type { TokenSummary } from "../control-plane/join-token-records.ts";
import type { StoreHealth } from "../control-plane/store-health.ts";
import { storeLines, type CheckLine } from "./check-store.ts";
import { replicaLines, rotationLines } from "./check-rotation.ts";
import type { ReplicaRecord } from "../control-plane/replica-presence.ts";


const DAY_MS = 24 * 3600_000;
/** A shared token (several uses) this close to its end needs replacing before new replicas find it spent. */
const SHARED_TOKEN_WARN_MS = 7 * DAY_MS;
const REPLACE_TOKEN = "make a new one ('mesh join-token --uses N'), put it where new replicas read it, then 'mesh join-token revoke' this one";

const FIX_TOKEN = "pass the token 'mesh control-plane' wrote: --admin-token-file <data-dir>/admin-token, or $MESH_ADMIN_TOKEN (default ./data/admin-token)";
const FIX_UNREACHABLE = "start it with 'mesh control-plane', or point --admin-url and --admin-token-file at it";

/** Lines for tokens of several uses: they sit in secrets new replicas depend on. Single-use tokens are handed out and forgotten. */
function sharedTokenLines(tokens: TokenSummary[]): CheckLine[] {
  return tokens
    .filter((t) => t.uses > 1 && Date.parse(t.expiresAt) > Date.now())
    .map((t) => {
      const label = `join token ${t.id} (${t.spiffeId})`;
      const left = t.uses - t.used;
      if (left * 10 < t.uses) return { ok: false, text: `${label} has ${left} of ${t.uses} uses left`, fix: REPLACE_TOKEN };
      const time = expiry(label, t.expiresAt, SHARED_TOKEN_WARN_MS, REPLACE_TOKEN);
      return time.ok ? { ok: true, text: `${time.text}, ${left} of ${t.uses} uses left` } : time;
    });
}

function expiry(label: string, iso: string, warnMs: number, fix: string): CheckLine {
  const left = new Date(iso).getTime() - Date.now();
  const human = left > DAY_MS ? `${Math.floor(left / DAY_MS)} days` : `${Math.max(0, Math.floor(left / 60_000))} minutes`;
  if (left <= 0) return { ok: false, text: `${label} expired at ${iso}`, fix };
  if (left < warnMs) return { ok: false, text: `${label} expires in ${human} (${iso})`, fix };
  return { ok: true, text: `${label} valid for ${human}` };
}

const FIX_STORE_READ = "see the store lines above and the control plane's log; the control plane serves its sidecars from its last view meanwhile";

/** A list the control plane reads from its store: its body, or a failing line naming what could not be read. */
async function storeRead<T>(client: AdminClient, path: string, what: string): Promise<{ ok: true; body: T } | { ok: false; status: number; line: CheckLine }> {
  const r = await client.call<T & { error?: string }>("GET", path);
  if (r.status === 200) return { ok: true, body: r.body };
  return { ok: false, status: r.status, line: { ok: false, text: `${what} could not be read (${path} answered ${r.status}): ${r.body.error ?? "no reason given"}`, fix: FIX_STORE_READ } };
}

function proxyLines(items: (ProxyStatus & { latest: string })[]): CheckLine[] {
  const registered = items.filter((px) => px.registered !== false);
  const lines: CheckLine[] = [registered.length ? { ok: true, text: `${registered.length} proxies connected` } : { ok: false, text: "no proxies connected", fix: "start sidecars with 'mesh proxy --control-plane URL' (see 'mesh join-token')" }];
  for (const px of items) {
    const who = `proxy ${px.namespace}/${px.service} at ${px.endpoint}`;
    if (px.registered === false)
      lines.push({ ok: false, text: `${who} refused its first config ${px.rejected?.version}: ${px.rejected?.reason}; it is not registered and serves no traffic`, fix: "correct the manifest it names with 'mesh apply', or upgrade that proxy if it is older than the control plane" });
    else if (px.rejected) lines.push({ ok: false, text: `${who} refused config ${px.rejected.version}: ${px.rejected.reason}`, fix: "correct the manifest it names with 'mesh apply'; the proxy keeps its last good config" });
    else if (px.acked !== px.latest) lines.push({ ok: false, text: `${who} is on config ${px.acked ?? "none"}, latest is ${px.latest}`, fix: "wait a few seconds; if it stays behind, check that proxy's logs and its reach to the control plane" });
    else lines.push({ ok: true, text: `${who} on the latest config ${px.latest}` });
  }
  return lines;
}

/** What this replica signed and refused: refusals are for the audit log to explain (a bad token, a CSR for another identity). */
function certificateCounts(c: AuditCounts): CheckLine {
  const refused = c.refused.bootstrap + c.refused.renewal;
  const text = `certificates since start: ${c.issued.bootstrap} first (join token), ${c.issued.renewal} renewed`;
  return { ok: true, text: refused > 0 ? `${text}; ${refused} requests refused (each one an "audit":"certificate-refused" line in the control plane's log)` : text };
}

export const checkCommand: CommandSpec = {
  name: "check",
  summary: "Check the mesh: control plane, CA and certificates, proxies on the latest config, rejections.",
  flags: [
    ...ADMIN_FLAGS,
    { name: "certs-dir", type: "string", value: "DIR", description: "Also check a workload's certificates here (as written by 'mesh ca issue' or a sidecar)." },
  ],
  examples: ["mesh check", "mesh check --certs-dir certs/default/orders"],
  async run(args, ctx) {
    const lines: CheckLine[] = [];
    const client = adminClient(args);
    // storeHealth: absent from control planes older than this check.
    let status: (ControlPlaneStatus & { storeHealth?: StoreHealth }) | undefined;
    try {
      const r = await client.call<ControlPlaneStatus & { storeHealth?: StoreHealth; error?: string }>("GET", "/v1/status");
      if (r.status !== 200) throw new MeshError(r.body.error ?? `status ${r.status}`);
      status = r.body;
      lines.push({ ok: true, text: `control plane reachable at ${client.url} (trust domain ${status.trustDomain}, ${status.store} store)` });
    } catch (err) {
      const message = (err as Error).message;
      lines.push({ ok: false, text: `control plane: ${message}`, fix: err instanceof AdminTokenRefused ? FIX_TOKEN : FIX_UNREACHABLE });
    }
    if (status) {
      lines.push(...storeLines(status.store, status.storeHealth, status.view));
      lines.push(expiry("root CA", status.ca.root, 90 * DAY_MS, "add a new root with 'mesh ca rotate --root', then distribute the bundle"));
      lines.push(expiry("signing intermediate", status.ca.intermediate, 30 * DAY_MS, "cut a new intermediate with 'mesh ca rotate' and restart the control plane"));
      // Renewed at half life: under a quarter left means renewals have been failing (a control plane of old gave no lifetime: 2 h).
      const servingTtl = status.ca.servingCertTtlMs;
      lines.push(expiry("control plane's certificate", status.ca.servingCert, servingTtl ? servingTtl / 4 : 2 * 3600_000, "it renews itself at half life and has not: see its log (a signing intermediate at its end needs 'mesh ca rotate', then a restart)"));
      lines.push(...rotationLines(status.ca));
      for (const [name, load] of Object.entries(status.listeners)) {
        if (load.refusedOverLimit > 0)
          lines.push({ ok: false, text: `the ${name} listener closed ${load.refusedOverLimit} connections at accept since start: it held its limit of ${load.limit}`, fix: "if sidecars were among them, raise --max-connections (the API's) or the open-files limit (ulimit -n); a flood from elsewhere is what the limit is for" });
        else lines.push({ ok: true, text: `${name} listener: ${load.open} of ${load.limit} connections` });
      }
      if (status.certificates) lines.push(certificateCounts(status.certificates));
      const p = status.policies;
      if (p && p.errors.length) lines.push({ ok: false, text: `policies in ${p.dir} rejected: ${p.errors.join("; ")}`, fix: "fix the manifests named (mesh validate -f DIR shows every error); the last good set is still served" });
      else if (p) lines.push({ ok: true, text: `policies in ${p.dir}: ${p.applied} manifests applied` });
      // All three are read from the store: asked at once, a store that does not answer costs its retry window once, not three times.
      const [tokens, proxies, replicas] = await Promise.all([
        storeRead<{ items: TokenSummary[] }>(client, "/v1/join-tokens", "join tokens"),
        storeRead<{ items: (ProxyStatus & { latest: string })[] }>(client, "/v1/proxies", "proxies"),
        storeRead<{ items: ReplicaRecord[] }>(client, "/v1/replicas", "control plane replicas"),
      ]);
      // 404: a control plane older than replica records.
      if (replicas.ok) lines.push(...replicaLines(replicas.body.items ?? [], status.ca, status.replica));
      else if (replicas.status !== 404) lines.push(replicas.line);
      lines.push(...(tokens.ok ? sharedTokenLines(tokens.body.items ?? []) : [tokens.line]));
      lines.push(...(proxies.ok ? proxyLines(proxies.body.items ?? []) : [proxies.line]));
    }
    const certsDir = str(args, "certs-dir");
    if (certsDir) {
      try {
        const certs = await loadWorkloadCerts({ certsDir });
        lines.push(expiry(`certificate ${certs.spiffeId}`, certs.notAfter.toISOString(), 3600_000, "renew it: a sidecar does so itself at half life; otherwise 'mesh ca issue'"));
      } catch (err) {
        lines.push({ ok: false, text: `certificates in ${certsDir}: ${(err as Error).message}`, fix: "issue new ones with 'mesh ca issue' or bootstrap with a join token" });
      }
    }
    // Lines hold what proxies reported (a refusal's reason): printed so none can forge or hide another.
    for (const l of lines) ctx.out(`${l.ok ? "PASS" : "FAIL"}  ${printable(l.text)}${l.fix ? `\n      fix: ${printable(l.fix)}` : ""}`);
    return lines.every((l) => l.ok) ? 0 : 1;
  },
};
