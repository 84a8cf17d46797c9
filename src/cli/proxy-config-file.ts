/**
 * A sidecar's static config file (`--config`): its ProxyConfig and the documents it routes
 * and enforces by, read at start and again when the file changes (or on SIGHUP), so a
 * sidecar without a control plane follows edits to its Services and policies. An edit that
 * fails validation is logged with the file, document and field named, and the last good
 * config keeps serving; a changed ProxyConfig (listeners, upstream, certificates) takes
 * effect at the next start, and the log says which fields wait for it.
 */
import { loadManifests, formatManifestError, type LoadedManifest } from "../config/load.ts";
import type { Service } from "../config/kinds/service.ts";
import type { DestinationPolicy } from "../config/kinds/destination-policy.ts";
import type { AuthorizationPolicy } from "../config/kinds/authorization-policy.ts";
import type { RequestAuthentication } from "../config/kinds/request-authentication.ts";
import type { HTTPRoute } from "../config/kinds/http-route.ts";
import type { RateLimitPolicy } from "../config/kinds/rate-limit-policy.ts";
import type { ProxyConfig } from "../config/kinds/proxy-config.ts";
import { crossDocumentProblems, type ProxyDocuments } from "../proxy/control/config-documents.ts";
import { DataError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import { watchFiles, type FileWatch } from "../core/file-watch.ts";

/** The file's documents (every policy in it: the proxy enforces those of its own service) and its ProxyConfig, if any. */
export interface ProxyFile extends ProxyDocuments {
  proxy?: ProxyConfig;
  /** Documents of kinds another process reads (a ControlPlaneConfig in a shared file), as "file#doc Kind". */
  skipped: string[];
}

/** The kinds a sidecar reads from its file; any other (a ControlPlaneConfig) is another process's. */
const PROXY_KINDS = ["ProxyConfig", "Service", "DestinationPolicy", "AuthorizationPolicy", "RateLimitPolicy", "RequestAuthentication", "HTTPRoute"];

export async function loadConfig(path: string | undefined): Promise<ProxyFile> {
  if (!path) return { services: [], policies: [], authorization: [], rateLimits: [], authentication: [], routes: [], skipped: [] };
  const { manifests, errors } = await loadManifests([path]);
  if (errors.length) throw new DataError(`invalid config:\n  ${errors.map(formatManifestError).join("\n  ")}`, "--config");
  // A file of none of them is the wrong file (another process's config): starting as if no file were given would hide that.
  if (!manifests.some((m) => PROXY_KINDS.includes(m.manifest.kind))) {
    const held = [...new Set(manifests.map((m) => m.manifest.kind))].sort().join(", ");
    throw new DataError(`holds only ${held}, which mesh proxy does not read; it reads ${PROXY_KINDS.join(", ")}`, path);
  }
  const of = (kind: string) => manifests.filter((m: LoadedManifest) => m.manifest.kind === kind);
  const proxies = of("ProxyConfig").map((m) => m.manifest) as ProxyConfig[];
  if (proxies.length > 1) throw new DataError(`holds ${proxies.length} ProxyConfig documents; a proxy takes one`, path);
  const problems = crossDocumentProblems(manifests.map((m) => ({ where: `${m.file}#${m.doc}`, manifest: m.manifest })));
  if (problems.length) throw new DataError(`invalid config:\n  ${problems.join("\n  ")}`, "--config");
  return {
    proxy: proxies[0],
    services: of("Service").map((m) => m.manifest) as Service[],
    policies: of("DestinationPolicy").map((m) => m.manifest) as DestinationPolicy[],
    authorization: of("AuthorizationPolicy").map((m) => m.manifest) as AuthorizationPolicy[],
    rateLimits: of("RateLimitPolicy").map((m) => m.manifest) as RateLimitPolicy[],
    authentication: of("RequestAuthentication").map((m) => m.manifest) as RequestAuthentication[],
    routes: of("HTTPRoute").map((m) => m.manifest) as HTTPRoute[],
    skipped: manifests.filter((m) => !PROXY_KINDS.includes(m.manifest.kind)).map((m) => `${m.file}#${m.doc} ${m.manifest.kind}`),
  };
}

/** Follows `path`: each edit that validates goes to `use`, as its documents; one that does not is logged and skipped. */
export function watchConfigFile(path: string, first: ProxyFile, use: (documents: ProxyDocuments) => void, log: Logger): FileWatch {
  let current = JSON.stringify(first);
  let lastProblem: string | undefined;
  return watchFiles([path], async () => {
    let next: ProxyFile;
    try {
      next = await loadConfig(path);
    } catch (err) {
      const problem = (err as Error).message;
      if (problem !== lastProblem) log.warn({ problem }, "config file not taken; the last good config keeps serving");
      lastProblem = problem;
      return;
    }
    lastProblem = undefined;
    const text = JSON.stringify(next);
    if (text === current) return;
    const { proxy, skipped, ...documents } = next;
    try {
      use(documents);
    } catch (err) {
      // Valid alone, refused in force (with the control plane's documents): the last good config serves; the next change is tried again.
      return void log.warn({ problem: (err as Error).message }, "config file not taken; the last good config keeps serving");
    }
    current = text;
    const waiting = proxyConfigChanges(first.proxy, proxy);
    log.info({ path, ...(waiting.length > 0 && { atNextStart: waiting }) }, "config reloaded");
  });
}

/** What differs between the ProxyConfig the sidecar started with and the file's now. */
function proxyConfigChanges(before: ProxyConfig | undefined, after: ProxyConfig | undefined): string[] {
  if (before === undefined || after === undefined) return before === after ? [] : [`the ProxyConfig document (${before ? "removed" : "added"})`];
  const a = before.spec as Record<string, unknown>;
  const b = after.spec as Record<string, unknown>;
  const fields = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
  return fields.sort().map((f) => `ProxyConfig spec.${f}`);
}
