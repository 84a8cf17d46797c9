/**
 * RequestAuthentication: the JSON Web Tokens a service's sidecars accept from end users
 * (Istio's RequestAuthentication). A request that carries a token must carry a valid one
 * from a listed issuer, or it is refused with 401; a request without one passes with no
 * request principal, and an AuthorizationPolicy's `from.requestPrincipals` is how to
 * require one.
 */
import { isIP } from "node:net";
import { z } from "zod";
import { cgiName } from "../../core/cgi-name";
import { always, listed, policyService } from "../common";
import { registerKind, type ManifestOf } from "../manifest";
import { ClaimPath, UNMATCHABLE_HEADERS } from "./authorization-policy";
import { readCertificates } from "../../pki/load";

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Members of a JWK that hold private or symmetric key material (RFC 7518 §6). */
const SECRET_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

const PublicJwk = z
  .looseObject({
    kty: z.enum(["RSA", "EC", "OKP"], { error: "expected kty RSA, EC or OKP: only public keys of asymmetric algorithms verify tokens" }).describe("Key type."),
    kid: z.string().optional().describe("Key id, which a token's header names."),
    alg: z.string().optional().describe("The one algorithm the key is for."),
    use: z.literal("sig", { error: 'expected use "sig"' }).optional().describe('"sig": a signing key.'),
  })
  .describe("A public JSON Web Key (RFC 7517); the members of its key type (n, e; crv, x, y) as the issuer publishes them.")
  .superRefine((jwk, ctx) => {
    const secret = SECRET_MEMBERS.filter((m) => m in jwk);
    if (secret.length > 0)
      ctx.addIssue({ code: "custom", message: `holds private key material (${secret.join(", ")}); give the public key only: a policy is sent to every sidecar of the service and shown in /config_dump` });
  });

export const Jwks = z.strictObject({ keys: z.array(PublicJwk).min(1).describe("The keys.") }).describe("A JSON Web Key Set (RFC 7517) of public keys.");

/** https, or http to a loopback address (a key server beside the sidecar, or a test). */
const JwksUri = z.url({ protocol: /^https?$/, error: "expected an https:// URL" }).superRefine((value, ctx) => {
  // The URL check above failed already (a refinement still runs after it).
  if (!URL.canParse(value)) return;
  const url = new URL(value);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const loopback = host === "localhost" || (isIP(host) === 4 && host.startsWith("127.")) || host === "::1";
  if (url.protocol === "http:" && !loopback) ctx.addIssue({ code: "custom", message: "expected https://: keys fetched over plain HTTP could be swapped on the way (http:// only to a loopback address)" });
});

/** CA certificates as PEM: public, parsed here so a bad bundle is refused at apply, not at the first token. */
const CaBundle = z.string().superRefine((pem, ctx) => {
  if (/PRIVATE KEY-----/.test(pem)) return ctx.addIssue({ code: "custom", message: "holds a private key: give only the CA's certificates" });
  try {
    readCertificates(pem, undefined, "CA bundle");
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
  }
});

/** A header name the proxy neither removes nor sets itself, in the one form its spellings share (core/cgi-name.ts). */
const HeaderName = (use: string) =>
  z
    .string()
    .regex(TOKEN, "expected an HTTP header name")
    .superRefine((written, ctx) => {
      const h = cgiName(written.toLowerCase());
      const read = h === written ? "" : ` (read as "${h}")`;
      if (UNMATCHABLE_HEADERS.has(h)) ctx.addIssue({ code: "custom", message: `"${written}"${read} is removed or set by the proxy; ${use}` });
    })
    .transform((h) => cgiName(h.toLowerCase()))
    .describe('Header name; "_" and other separators are read as "-", as CGI-style servers read them.');

const TokenLocation = z
  .strictObject({
    name: HeaderName("a token cannot travel in it"),
    prefix: z.string().default("").describe('What precedes the token in the value, e.g. "Bearer " (matched without regard to case); default none.'),
  })
  .describe("A request header that carries a token.");

export const JwtRule = z
  .strictObject({
    issuer: z.string().min(1).describe("The token's `iss`, exactly; tokens from other issuers are refused."),
    audiences: z.array(z.string().min(1)).min(1).optional().describe("`aud` values accepted; the token must hold one. Omitted: any audience."),
    jwks: Jwks.optional().describe("The issuer's public keys, inline."),
    jwksUri: JwksUri.optional().describe("Where the sidecar fetches the issuer's public keys (fetched again when a token names a key it does not have, at most every 5 s, and when 5 min old)."),
    jwksCaBundle: CaBundle.optional().describe(
      "PEM certificates of the CA that issued the jwksUri server's certificate, for an identity provider behind a private CA; its server is then verified with these alone, not the runtime's root store.",
    ),
    fromHeaders: z
      .array(TokenLocation)
      .min(1)
      .default([{ name: "authorization", prefix: "Bearer " }])
      .describe('Headers a token is looked for in; default `Authorization: Bearer <token>`.'),
    forwardOriginalToken: z.boolean().default(false).describe("Keep the token's header on the request the service receives; default false: it is removed once verified."),
    outputClaimToHeaders: z
      .array(
        z
          .strictObject({
            header: HeaderName("it cannot carry a claim"),
            claim: ClaimPath.describe("The claim: a name, or a path like realm_access.roles."),
          })
          .describe("A header the service receives with a claim of the verified token."),
      )
      .min(1)
      .optional()
      .describe(
        "Claims the service receives as headers, so it need not read the token: a string, number or boolean claim, as printable ASCII; others are left out. These headers are removed from every request first, token or not, so a client cannot send them itself.",
      ),
  })
  .superRefine((rule, ctx) => {
    if ((rule.jwks === undefined) === (rule.jwksUri === undefined))
      ctx.addIssue({ code: "custom", path: ["jwks"], message: "give the issuer's keys as jwks or jwksUri, one of the two" });
    if (rule.jwksCaBundle !== undefined && !rule.jwksUri?.startsWith("https://"))
      ctx.addIssue({ code: "custom", path: ["jwksCaBundle"], message: "verifies the server of an https:// jwksUri; this rule has none" });
  }, always)
  .describe("One issuer whose tokens are accepted, its keys, and where its tokens travel.");

export const RequestAuthenticationSpec = z
  .strictObject({
    service: policyService("verify tokens"),
    jwtRules: z.array(JwtRule).min(1).describe("The issuers accepted."),
  })
  .superRefine((spec, ctx) => {
    // Runs beside other errors: an entry of the wrong type is its own schema's error, skipped here.
    const rules = listed(spec.jwtRules);
    const seen = new Set<string>();
    const tokenHeaders = new Set(rules.flatMap(([r]) => listed(r.fromHeaders).map(([l]) => l.name)));
    for (const [rule, i] of rules) {
      if (seen.has(rule.issuer)) ctx.addIssue({ code: "custom", path: ["jwtRules", i, "issuer"], message: `issuer "${rule.issuer}" is listed twice` });
      seen.add(rule.issuer);
      const claimHeaders = new Set<string>();
      for (const [o, j] of listed(rule.outputClaimToHeaders)) {
        const path = ["jwtRules", i, "outputClaimToHeaders", j, "header"];
        if (tokenHeaders.has(o.header)) ctx.addIssue({ code: "custom", path, message: `"${o.header}" carries tokens (fromHeaders); a claim needs a header of its own` });
        if (claimHeaders.has(o.header)) ctx.addIssue({ code: "custom", path, message: `"${o.header}" is named twice in this rule` });
        claimHeaders.add(o.header);
      }
    }
  }, always)
  .describe("Which end-user tokens (JWTs) a service accepts: issuers, their keys, audiences.");

export const RequestAuthentication = registerKind({
  kind: "RequestAuthentication",
  spec: RequestAuthenticationSpec,
  description:
    "Which JSON Web Tokens a service's sidecars accept from end users: a request with a token must carry a valid one (else 401); AuthorizationPolicy `from.requestPrincipals` requires one.",
});
export type RequestAuthentication = ManifestOf<typeof RequestAuthentication>;
