import { join } from "node:path";
import { bundlePem, issueLeaf, loadCa } from "../../ca/authority.ts";
import { workloadPaths } from "../../ca/layout.ts";
import { writeFileSet } from "../../core/files.ts";
import { certToPem, exportPrivateKeyPem, generateKeyPair } from "../../pki/x509.ts";
import { bool, str, type CommandSpec } from "../args.ts";
import { CA_DIR_FLAG, FORCE_FLAG, IDENTITY_FLAGS, assertNotExpired, formatRemaining, identityFrom } from "./shared.ts";

export const caIssue: CommandSpec = {
  name: "issue",
  summary: "Issue a workload key and X.509-SVID certificate (spiffe://<td>/ns/<ns>/sa/<service>).",
  description:
    "Writes key.pem (0600), cert.pem (the leaf), chain.pem (leaf + intermediate, what a proxy presents)\nand bundle.pem (the roots to trust) into --out. 'mesh proxy --certs-dir' reads that directory.",
  flags: [
    ...IDENTITY_FLAGS,
    CA_DIR_FLAG,
    { name: "out", type: "string", value: "DIR", description: "Output directory (default: <ca-dir>/<namespace>/<service>)." },
    FORCE_FLAG,
  ],
  examples: ["mesh ca issue --service orders", "mesh ca issue --service payments --namespace shop --dns payments.shop.svc --ttl 12h --out certs/payments"],
  async run(args, ctx) {
    const id = identityFrom(args);
    const caDir = str(args, "ca-dir")!;
    const ca = await loadCa(caDir);
    assertNotExpired(ca.intermediate.cert.notAfter, "signing intermediate", ca.paths.intermediateCert);
    const out = workloadPaths(str(args, "out") ?? join(caDir, id.namespace, id.service));
    const keys = await generateKeyPair();
    const leaf = await issueLeaf(ca.intermediate, { ...id, trustDomain: ca.trustDomain, publicKey: keys.publicKey });
    const leafPem = certToPem(leaf.cert);
    writeFileSet(
      [
        { path: out.key, content: await exportPrivateKeyPem(keys.privateKey), secret: true },
        { path: out.cert, content: leafPem },
        { path: out.chain, content: leafPem + certToPem(ca.intermediate.cert) },
        { path: out.bundle, content: bundlePem(ca.bundle) },
      ],
      { force: bool(args, "force") },
    );
    ctx.out(`Issued ${leaf.spiffeId}`);
    ctx.out(`  valid until ${leaf.cert.notAfter.toISOString()} (${formatRemaining(leaf.cert.notAfter.getTime() - Date.now())})`);
    if (leaf.clamped) ctx.out("  note: shortened to end with the signing intermediate; rotate it soon ('mesh ca rotate')");
    ctx.out(`  ${out.key}  ${out.cert}  ${out.chain}  ${out.bundle}`);
    return 0;
  },
};
