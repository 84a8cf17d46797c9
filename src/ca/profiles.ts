/**
 * The certificate profiles mesh issues. Every extension a SPIFFE verifier checks is
 * set here and nowhere else, so the root, the intermediate and the X.509-SVID leaf
 * cannot drift from the SPIFFE X.509-SVID rules.
 */
import { x509 } from "../pki/x509.ts";

const { KeyUsageFlags, ExtendedKeyUsage } = x509;

export const ROOT_TTL_MS = 10 * 365 * 24 * 3600_000;
export const INTERMEDIATE_TTL_MS = 365 * 24 * 3600_000;
export { DEFAULT_LEAF_TTL_MS, MAX_LEAF_TTL_MS, MIN_LEAF_TTL_MS } from "./lifetimes.ts";
/** Leaves and the CAs above them start a minute in the past so a peer whose clock lags a little still accepts them. */
export const CLOCK_SKEW_MS = 60_000;

async function identifiers(subjectKey: CryptoKey, issuerKey: CryptoKey): Promise<x509.Extension[]> {
  return [
    await x509.SubjectKeyIdentifierExtension.create(subjectKey),
    await x509.AuthorityKeyIdentifierExtension.create(issuerKey),
  ];
}

function trustDomainSan(trustDomain: string): x509.Extension {
  return new x509.SubjectAlternativeNameExtension([{ type: "url", value: `spiffe://${trustDomain}` }]);
}

/** A signing CA: CA=true, keyCertSign and cRLSign, URI SAN of the bare trust domain. */
export async function caExtensions(opts: {
  trustDomain: string;
  pathLength: number;
  subjectKey: CryptoKey;
  issuerKey: CryptoKey;
}): Promise<x509.Extension[]> {
  return [
    new x509.BasicConstraintsExtension(true, opts.pathLength, true),
    new x509.KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
    trustDomainSan(opts.trustDomain),
    ...(await identifiers(opts.subjectKey, opts.issuerKey)),
  ];
}

/**
 * An X.509-SVID: exactly one URI SAN (the SPIFFE ID), optional DNS names, CA=false,
 * key usage digitalSignature (critical), serverAuth + clientAuth so the same
 * certificate serves both ends of a mutual-TLS connection.
 */
export async function leafExtensions(opts: {
  spiffeId: string;
  dnsNames: string[];
  subjectKey: CryptoKey;
  issuerKey: CryptoKey;
}): Promise<x509.Extension[]> {
  const names: x509.JsonGeneralName[] = [
    { type: "url", value: opts.spiffeId },
    ...opts.dnsNames.map((value) => ({ type: "dns" as const, value })),
  ];
  return [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([ExtendedKeyUsage.serverAuth, ExtendedKeyUsage.clientAuth], false),
    new x509.SubjectAlternativeNameExtension(names, false),
    ...(await identifiers(opts.subjectKey, opts.issuerKey)),
  ];
}
