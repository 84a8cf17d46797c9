/** Policy manifests for tests: parsed as `mesh apply` would, in namespace shop. */
import { exportJWK, generateKeyPair, SignJWT, type JWK } from "jose";
import type { AuthorizationPolicy } from "../../src/config/kinds/authorization-policy.ts";
import "../../src/config/kinds/index.ts";
import { parseManifest } from "../../src/config/manifest.ts";

/** The outcome of parsing a manifest of `kind` with this spec, named `name`. */
export function parsedManifest(kind: string, spec: Record<string, unknown>, name = "p") {
  return parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind, metadata: { name, namespace: "shop" }, spec });
}

/** The manifest, or a thrown error listing what the schema found. */
export function validManifest<T>(kind: string, spec: Record<string, unknown>, name = "p"): T {
  const r = parsedManifest(kind, spec, name);
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.manifest as T;
}

/** `path: message` of each problem the schema finds; none for a valid spec. */
export function manifestIssues(kind: string, spec: Record<string, unknown>): string[] {
  const r = parsedManifest(kind, spec);
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
}

export const parsedAuthorizationPolicy = (spec: Record<string, unknown>) => parsedManifest("AuthorizationPolicy", spec);
export const authorizationPolicy = (spec: Record<string, unknown>) => validManifest<AuthorizationPolicy>("AuthorizationPolicy", spec);
export const authorizationPolicyIssues = (spec: Record<string, unknown>) => manifestIssues("AuthorizationPolicy", spec);

/** An end-user token issuer with an ES256 key (kid k1), given to sidecars inline. */
export interface TestIssuer {
  issuer: string;
  jwk: JWK;
  /** A RequestAuthentication document for `service` trusting this issuer's inline key. */
  requestAuthentication(service: string): string;
  token(sub?: string, claims?: Record<string, unknown>): Promise<string>;
}

export async function testIssuer(issuer: string): Promise<TestIssuer> {
  const keys = await generateKeyPair("ES256");
  const jwk = { ...(await exportJWK(keys.publicKey)), kid: "k1", alg: "ES256" };
  return {
    issuer,
    jwk,
    requestAuthentication: (service) =>
      `---\napiVersion: mesh.dev/v1alpha1\nkind: RequestAuthentication\nmetadata: { name: users }\nspec:\n  service: ${service}\n  jwtRules:\n    - issuer: ${issuer}\n      jwks: ${JSON.stringify({ keys: [jwk] })}\n`,
    token: (sub = "alice", claims = {}) => new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(issuer).setSubject(sub).setExpirationTime("5m").sign(keys.privateKey),
  };
}

/**
 * A Service (`spec`: its own lines, indented under spec) of two endpoints on loopback,
 * `first` then `second`, alternated (round robin) and never ejected, so a test knows which
 * one each call meets; `retries`: the policy's retries, inside the braces; `policy`: more
 * lines of the policy's spec.
 */
export function alternatingService(name: string, spec: string, first: number, second: number, retries: string, policy = ""): string {
  return `---
apiVersion: mesh.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec:
${spec}
  endpoints: [{ address: 127.0.0.1, port: ${first} }, { address: 127.0.0.1, port: ${second} }]
---
apiVersion: mesh.dev/v1alpha1
kind: DestinationPolicy
metadata: { name: ${name} }
spec:
  loadBalancer: { type: round-robin }
  outlierDetection: { consecutiveFailures: 1000 }
  retries: { ${retries} }
${policy}`;
}
