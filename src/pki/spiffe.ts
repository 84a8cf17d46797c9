/**
 * SPIFFE IDs, by the SPIFFE-ID specification: `spiffe://<trust-domain>/<path>`.
 * Parsing is strict: the ID is an identity, so anything ambiguous is rejected rather
 * than normalized (no percent-encoding, no dot segments, no port, query or fragment).
 */
export interface SpiffeId {
  readonly trustDomain: string;
  /** "" for a trust-domain ID, otherwise "/seg/seg". */
  readonly path: string;
}

const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const PATH_SEGMENT = /^[A-Za-z0-9._-]+$/;
/** Kubernetes-style DNS label: what a namespace or service name may be. */
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export type SpiffeResult = { ok: true; id: SpiffeId } | { ok: false; reason: string };

export function trustDomainProblem(td: string): string | undefined {
  if (td.length === 0) return "trust domain is empty";
  if (td.length > 255) return "trust domain is longer than 255 characters";
  if (!TRUST_DOMAIN.test(td)) return `trust domain "${td}" may hold only lowercase letters, digits, '.', '-' and '_'`;
  return undefined;
}

export function nameProblem(kind: string, name: string): string | undefined {
  if (!DNS_LABEL.test(name))
    return `${kind} "${name}" must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`;
  return undefined;
}

export function parseSpiffeId(uri: string): SpiffeResult {
  const fail = (reason: string): SpiffeResult => ({ ok: false, reason });
  if (uri.length > 2048) return fail("SPIFFE ID is longer than 2048 bytes");
  const prefix = "spiffe://";
  if (!uri.startsWith(prefix)) return fail(`"${uri}" does not start with spiffe://`);
  const rest = uri.slice(prefix.length);
  if (/[?#%]/.test(rest)) return fail(`"${uri}" has a query, fragment or percent-encoding`);
  const slash = rest.indexOf("/");
  const td = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? "" : rest.slice(slash);
  if (td.includes(":") || td.includes("@")) return fail(`"${uri}" has a port or user info in its trust domain`);
  const tdProblem = trustDomainProblem(td);
  if (tdProblem) return fail(tdProblem);
  if (path !== "") {
    const segments = path.slice(1).split("/");
    for (const seg of segments) {
      if (seg === "") return fail(`"${uri}" has an empty path segment or a trailing '/'`);
      if (seg === "." || seg === "..") return fail(`"${uri}" has a '.' or '..' path segment`);
      if (!PATH_SEGMENT.test(seg)) return fail(`"${uri}" has a path segment with characters outside [A-Za-z0-9._-]`);
    }
  }
  return { ok: true, id: { trustDomain: td, path } };
}

export function formatSpiffeId(id: SpiffeId): string {
  return `spiffe://${id.trustDomain}${id.path}`;
}

/** The workload identity mesh issues: `spiffe://<td>/ns/<namespace>/sa/<service>`. */
export function workloadId(trustDomain: string, namespace: string, service: string): SpiffeId {
  return { trustDomain, path: `/ns/${namespace}/sa/${service}` };
}

/** Reads namespace and service back from a workload ID; undefined when it is not of that shape. */
export function workloadOf(id: SpiffeId): { namespace: string; service: string } | undefined {
  const m = /^\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id.path);
  return m ? { namespace: m[1]!, service: m[2]! } : undefined;
}
