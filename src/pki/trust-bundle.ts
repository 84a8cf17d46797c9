/**
 * Trust anchors grouped by SPIFFE trust domain. A peer of trust domain T is only
 * ever checked against T's roots: a root of another domain vouching for a T
 * identity is exactly the cross-domain forgery SPIFFE bundles exist to prevent.
 */
import { DataError } from "../core/errors.ts";
import { sameBytes, type Certificate } from "./certificate.ts";
import { readCertificates } from "./load.ts";
import { parseSpiffeId, trustDomainProblem } from "./spiffe.ts";
import { certName, sanNames } from "./san.ts";

type Cert = Certificate;

export class TrustBundle {
  readonly #roots = new Map<string, Cert[]>();

  /**
   * Reads every CERTIFICATE block of a PEM text. Without `trustDomain`, each root's
   * domain comes from its SPIFFE trust-domain ID URI SAN (X509-SVID §3.2).
   * `source` (a file path) is only used in error messages.
   */
  static fromPem(pem: string, trustDomain?: string, source?: string): TrustBundle {
    return new TrustBundle().addPem(pem, trustDomain, source);
  }

  addPem(pem: string, trustDomain?: string, source?: string): this {
    const certs = readCertificates(pem, source, "trust bundle");
    // Resolve every domain before adding any, so a bad root leaves the bundle unchanged.
    const resolved = certs.map((cert) => [cert, domainFor(cert, trustDomain, source)] as const);
    for (const [cert, td] of resolved) this.#insert(cert, td);
    return this;
  }

  add(cert: Cert, trustDomain?: string): this {
    this.#insert(cert, domainFor(cert, trustDomain));
    return this;
  }

  /** Trust domains with at least one root, sorted. */
  trustDomains(): string[] {
    return [...this.#roots.keys()].sort();
  }

  roots(trustDomain: string): readonly Cert[] {
    return this.#roots.get(trustDomain) ?? [];
  }

  /** Every root of every trust domain, in trust-domain order. */
  allRoots(): Cert[] {
    return this.trustDomains().flatMap((td) => this.roots(td));
  }

  has(trustDomain: string): boolean {
    return this.#roots.has(trustDomain);
  }

  get size(): number {
    let n = 0;
    for (const list of this.#roots.values()) n += list.length;
    return n;
  }

  #insert(cert: Cert, td: string): void {
    const list = this.#roots.get(td) ?? [];
    // The same root listed twice (common when bundles are concatenated) is one anchor.
    if (!list.some((r) => sameBytes(r.der, cert.der))) list.push(cert);
    this.#roots.set(td, list);
  }
}

function domainFor(cert: Cert, explicit: string | undefined, source?: string): string {
  if (explicit !== undefined) {
    const problem = trustDomainProblem(explicit);
    if (problem) throw new DataError(problem, source);
    return explicit;
  }
  const names = sanNames(cert);
  const [uri, ...more] = names.ok ? names.uris : [];
  const parsed = uri !== undefined && more.length === 0 ? parseSpiffeId(uri) : undefined;
  if (!parsed?.ok || parsed.id.path !== "")
    throw new DataError(
      `root ${certName(cert)} does not carry exactly one SPIFFE trust-domain ID (spiffe://<trust-domain>) ` +
        `as its URI SAN; give its trust domain explicitly`,
      source,
    );
  return parsed.id.trustDomain;
}
