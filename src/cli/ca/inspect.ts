import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { caPaths } from "../../ca/layout.ts";
import { readTextFile } from "../../core/files.ts";
import { KU, OID, type Certificate } from "../../pki/certificate.ts";
import { readCertificates } from "../../pki/load.ts";
import { verifyCaChain } from "../../pki/verify-ca.ts";
import { TrustBundle, verifyPeerChain, spiffeIdOfLeaf } from "../../pki/verify.ts";
import { parseSpiffeId } from "../../pki/spiffe.ts";
import { printable } from "../../core/printable.ts";
import { x509 } from "../../pki/x509.ts";
import { str, type CommandSpec } from "../args.ts";
import { CA_DIR_FLAG, formatRemaining } from "./shared.ts";

function describeKey(cert: Certificate): string {
  try {
    const alg = new x509.X509Certificate(cert.der.slice()).publicKey.algorithm as EcKeyAlgorithm & { modulusLength?: number };
    return alg.namedCurve ? `${alg.name} ${alg.namedCurve}` : `${alg.name}${alg.modulusLength ? ` ${alg.modulusLength}` : ""}`;
  } catch {
    return "(an algorithm mesh does not read)";
  }
}

/** From mesh's own decoding, as the verifier sees it: an unreadable extension is shown here and judged in the verdict. */
function describeUsage(cert: Certificate): string {
  if (cert.extensionProblem) return `(unreadable: ${cert.extensionProblem})`;
  const ku = cert.known.keyUsage ?? 0;
  const flags = Object.entries(KU).filter(([, bit]) => ku & bit).map(([name]) => name);
  const ekuNames: Record<string, string> = { [OID.serverAuth]: "serverAuth", [OID.clientAuth]: "clientAuth" };
  const ekus = (cert.known.extKeyUsage ?? []).map((oid) => ekuNames[oid] ?? oid);
  return [...flags, ...ekus].join(", ") || "(none)";
}

/** A CA names a trust domain (its SPIFFE trust-domain ID), not a workload; none: a CA of whichever domain a bundle gives it. */
function describeCaIdentity(cert: Certificate): string {
  if (cert.extensionProblem) return `none (unreadable: ${cert.extensionProblem})`;
  const uris = cert.known.san?.uris ?? [];
  if (uris.length === 0) return "none (no URI SAN: a CA of any trust domain whose roots it chains to)";
  const parsed = uris.length === 1 ? parseSpiffeId(uris[0]!) : undefined;
  if (parsed?.ok && parsed.id.path === "") return `trust domain ${parsed.id.trustDomain}`;
  return `none (${uris.map((u) => JSON.stringify(printable(u))).join(", ")}: not one SPIFFE trust-domain ID)`;
}

/** The serial as openssl prints it: without the sign byte DER adds before a high first byte. */
const displaySerial = (cert: Certificate) => cert.serialNumber.replace(/^00(?=[89a-f])/, "");

/** The bundle to judge against: --bundle, else bundle.pem beside the file, else the CA's. */
function bundlePathFor(file: string, flag: string | undefined, caDir: string): string {
  if (flag) return flag;
  const beside = join(dirname(file), "bundle.pem");
  return existsSync(beside) ? beside : caPaths(caDir).bundle;
}

export const caInspect: CommandSpec = {
  name: "inspect",
  summary: "Show a certificate's identity, issuer and validity, and the chain's verdict against the trust bundle.",
  positionals: [{ name: "FILE", description: "PEM file: a leaf, or a chain with the leaf first.", required: true }],
  flags: [{ name: "bundle", type: "string", value: "FILE", description: "Trust bundle to verify against (default: bundle.pem beside FILE, else <ca-dir>/bundle.pem)." }, CA_DIR_FLAG],
  examples: ["mesh ca inspect certs/default/orders/chain.pem"],
  async run(args, ctx) {
    const file = args.positionals[0]!;
    const chain = readCertificates(readTextFile(file, "certificate file"), file, "certificate file");
    const leaf = chain[0]!;
    const isCa = leaf.known.basicConstraints?.ca === true;
    const id = spiffeIdOfLeaf(leaf);
    const now = Date.now();
    const rows: [string, string][] = [
      ["File", `${file} (${chain.length} certificate${chain.length === 1 ? "" : "s"})`],
      ["Identity", isCa ? describeCaIdentity(leaf) : id.ok ? id.spiffeId : `none (${id.reason})`],
      ["Kind", isCa ? "CA certificate" : "workload certificate (X.509-SVID)"],
      ["Subject", leaf.subject],
      ["Issuer", leaf.issuer],
      ["Serial", displaySerial(leaf)],
      ["Not before", leaf.notBefore.toISOString()],
      ["Not after", `${leaf.notAfter.toISOString()} (${formatRemaining(leaf.notAfter.getTime() - now)}${leaf.notAfter.getTime() > now ? " left" : ""})`],
      ["Key", describeKey(leaf)],
      ["Usage", describeUsage(leaf)],
    ];
    const bundlePath = bundlePathFor(file, str(args, "bundle"), str(args, "ca-dir")!);
    const bundle = TrustBundle.fromPem(readTextFile(bundlePath, "trust bundle"), undefined, bundlePath);
    // A CA is judged as a path to a root, validity periods included; a leaf also by the X509-SVID rules.
    const result = isCa ? await verifyCaChain(chain, bundle) : await verifyPeerChain(chain, bundle);
    const trusted = isCa ? `trusted: chains to a root in ${bundlePath}` : `valid against ${bundlePath}`;
    rows.push(["Chain", result.ok ? trusted : `INVALID (${result.reason}): ${result.detail}`]);
    const width = Math.max(...rows.map(([k]) => k.length)) + 2;
    for (const [k, v] of rows) ctx.out(`${(k + ":").padEnd(width)}${v}`);
    return result.ok ? 0 : 1;
  },
};
