/**
 * Validates the documents of a config version before any of it is used, the same way
 * a config file is checked: every schema, and every policy's service present. The
 * reason for a refusal goes back to the control plane in the acknowledgement.
 */
import type { AuthorizationPolicy } from "../../config/kinds/authorization-policy.ts";
import type { DestinationPolicy } from "../../config/kinds/destination-policy.ts";
import type { Service } from "../../config/kinds/service.ts";
import { parseManifest } from "../../config/manifest.ts";
import "../../config/kinds/index.ts";

export interface ProxyDocuments {
  services: Service[];
  policies: DestinationPolicy[];
  /** The policies of the proxy's own service, enforced on its inbound. */
  authorization: AuthorizationPolicy[];
}

export class ConfigRejected extends Error {
  override readonly name = "ConfigRejected";
}

export function parseConfigDocuments(documents: unknown[]): ProxyDocuments {
  const problems: string[] = [];
  const services: Service[] = [];
  const policies: DestinationPolicy[] = [];
  const authorization: AuthorizationPolicy[] = [];
  documents.forEach((doc, i) => {
    const parsed = parseManifest(doc);
    if (!parsed.ok) {
      for (const issue of parsed.issues) problems.push(`document ${i}${issue.path ? ` ${issue.path}` : ""}: ${issue.message}`);
      return;
    }
    const m = parsed.manifest;
    if (m.kind === "Service") services.push(m as Service);
    else if (m.kind === "DestinationPolicy") policies.push(m as DestinationPolicy);
    else if (m.kind === "AuthorizationPolicy") authorization.push(m as AuthorizationPolicy);
    else problems.push(`document ${i} kind: ${m.kind} is not part of a proxy's config`);
  });
  const known = new Set(services.map((s) => `${s.metadata.name}.${s.metadata.namespace}`));
  for (const p of policies)
    if (!known.has(`${p.spec.service}.${p.metadata.namespace}`)) problems.push(`DestinationPolicy ${p.metadata.namespace}/${p.metadata.name} spec.service: no Service "${p.spec.service}"`);
  if (problems.length) throw new ConfigRejected(problems.join("; "));
  return { services, policies, authorization };
}
