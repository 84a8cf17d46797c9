import { bundlePem, issueLeaf, loadCa } from "../../ca/authority.ts";
import { checkCsr, parseCsr } from "../../ca/csr.ts";
import { workloadPaths } from "../../ca/layout.ts";
import { readTextFile, writeFileSet } from "../../core/files.ts";
import { formatSpiffeId, workloadId } from "../../pki/spiffe.ts";
import { certToPem } from "../../pki/x509.ts";
import { bool, str, type CommandSpec } from "../args.ts";
import { CA_DIR_FLAG, FORCE_FLAG, IDENTITY_FLAGS, assertNotExpired, identityFrom } from "./shared.ts";

export const caSign: CommandSpec = {
  name: "sign",
  summary: "Issue a certificate for a key held elsewhere, from its CSR, for exactly the identity given.",
  description:
    "The CSR's signature is checked, and it may ask for nothing beyond the granted identity:\nno other URI or DNS SAN than --service/--namespace/--dns, no CA, no other key usage.",
  flags: [
    { name: "csr", type: "string", value: "FILE", required: true, description: "PEM certificate request (ECDSA P-256 or P-384 key)." },
    ...IDENTITY_FLAGS,
    CA_DIR_FLAG,
    { name: "out", type: "string", value: "DIR", description: "Write cert.pem, chain.pem and bundle.pem here (default: print the chain)." },
    FORCE_FLAG,
  ],
  examples: ["mesh ca sign --csr orders.csr --service orders --out certs/orders"],
  async run(args, ctx) {
    const id = identityFrom(args);
    const csrPath = str(args, "csr")!;
    const csr = parseCsr(readTextFile(csrPath, "CSR"), csrPath);
    const ca = await loadCa(str(args, "ca-dir")!);
    assertNotExpired(ca.intermediate.cert.notAfter, "signing intermediate", ca.paths.intermediateCert);
    const spiffeId = formatSpiffeId(workloadId(ca.trustDomain, id.namespace, id.service));
    const publicKey = await checkCsr(csr, { spiffeId, service: id.service, dnsNames: id.dnsNames }, csrPath);
    const leaf = await issueLeaf(ca.intermediate, { ...id, trustDomain: ca.trustDomain, publicKey });
    const chain = certToPem(leaf.cert) + certToPem(ca.intermediate.cert);
    const outDir = str(args, "out");
    if (!outDir) {
      ctx.out(chain.trimEnd());
      return 0;
    }
    const out = workloadPaths(outDir);
    writeFileSet(
      [
        { path: out.cert, content: certToPem(leaf.cert) },
        { path: out.chain, content: chain },
        { path: out.bundle, content: bundlePem(ca.bundle) },
      ],
      { force: bool(args, "force") },
    );
    ctx.out(`Signed ${leaf.spiffeId}, valid until ${leaf.cert.notAfter.toISOString()}: ${out.cert}, ${out.chain}, ${out.bundle}`);
    return 0;
  },
};
