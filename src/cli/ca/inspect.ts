import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { asCertificate, parseCertificatesAt } from "../../ca/authority.ts";
import { caPaths } from "../../ca/layout.ts";
import { sameBytes, type Certificate } from "../../pki/certificate.ts";
import { TrustBundle, verifyPeerChain, spiffeIdOfLeaf } from "../../pki/verify.ts";
import { x509 } from "../../pki/x509.ts";
import { str, type CommandSpec } from "../args.ts";
import { CA_DIR_FLAG, formatRemaining } from "./shared.ts";

function describeKey(cert: x509.X509Certificate): string {
  const alg = cert.publicKey.algorithm as EcKeyAlgorithm & { modulusLength?: number };
  return alg.namedCurve ? `${alg.name} ${alg.namedCurve}` : `${alg.name}${alg.modulusLength ? ` ${alg.modulusLength}` : ""}`;
}

function describeUsage(cert: x509.X509Certificate): string {
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  const flags = ku ? Object.entries(x509.KeyUsageFlags).filter(([, v]) => typeof v === "number" && ku.usages & v).map(([k]) => k) : [];
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  const names: Record<string, string> = { [x509.ExtendedKeyUsage.serverAuth]: "serverAuth", [x509.ExtendedKeyUsage.clientAuth]: "clientAuth" };
  const ekus = eku?.usages.map((u) => names[String(u)] ?? String(u)) ?? [];
  return [...flags, ...ekus].join(", ") || "(none)";
}

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
    const chain = parseCertificatesAt(file, "certificate file");
    const leaf = chain[0]!;
    const verifiable = chain.map(asCertificate);
    const isCa = verifiable[0]!.known.basicConstraints?.ca === true;
    const id = spiffeIdOfLeaf(verifiable[0]!);
    const now = Date.now();
    const rows: [string, string][] = [
      ["File", `${file} (${chain.length} certificate${chain.length === 1 ? "" : "s"})`],
      ["Identity", id.ok ? id.spiffeId : `none (${id.reason})`],
      ["Kind", isCa ? "CA certificate" : "workload certificate (X.509-SVID)"],
      ["Subject", leaf.subject],
      ["Issuer", leaf.issuer],
      ["Serial", leaf.serialNumber],
      ["Not before", leaf.notBefore.toISOString()],
      ["Not after", `${leaf.notAfter.toISOString()} (${formatRemaining(leaf.notAfter.getTime() - now)}${leaf.notAfter.getTime() > now ? " left" : ""})`],
      ["Key", describeKey(leaf)],
      ["Usage", describeUsage(leaf)],
    ];
    const bundlePath = bundlePathFor(file, str(args, "bundle"), str(args, "ca-dir")!);
    const bundle = new TrustBundle();
    for (const root of parseCertificatesAt(bundlePath, "trust bundle")) bundle.add(asCertificate(root));
    let verdict: string;
    let ok: boolean;
    if (isCa) {
      ok = await chainsToBundle(verifiable[0]!, bundle);
      verdict = ok ? `trusted: signed by a root in ${bundlePath}` : `NOT TRUSTED: no root in ${bundlePath} signed it`;
    } else {
      const result = await verifyPeerChain(verifiable, bundle);
      ok = result.ok;
      verdict = result.ok ? `valid against ${bundlePath}` : `INVALID (${result.reason}): ${result.detail}`;
    }
    rows.push(["Chain", verdict]);
    const width = Math.max(...rows.map(([k]) => k.length)) + 2;
    for (const [k, v] of rows) ctx.out(`${(k + ":").padEnd(width)}${v}`);
    return ok ? 0 : 1;
  },
};

async function chainsToBundle(cert: Certificate, bundle: TrustBundle): Promise<boolean> {
  for (const root of bundle.allRoots()) {
    if (sameBytes(root.der, cert.der)) return true;
    if (sameBytes(root.subjectDer, cert.issuerDer) && (await cert.isSignedBy(root))) return true;
  }
  return false;
}
