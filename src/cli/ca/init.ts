import { join } from "node:path";
import { createCaFiles } from "../../ca/create.ts";
import { bool, str, type CommandSpec } from "../args.ts";
import { FORCE_FLAG, checkTrustDomain } from "./shared.ts";

export const caInit: CommandSpec = {
  name: "init",
  summary: "Create a root CA (10 years) and a signing intermediate (1 year) for a trust domain.",
  flags: [
    { name: "trust-domain", type: "string", value: "TD", default: "mesh.local", description: "The SPIFFE trust domain, e.g. mesh.local or prod.example.com." },
    { name: "out", type: "string", value: "DIR", default: "certs", description: "Directory to write the CA into." },
    FORCE_FLAG,
  ],
  examples: ["mesh ca init --trust-domain mesh.local --out certs/"],
  async run(args, ctx) {
    const trustDomain = checkTrustDomain(str(args, "trust-domain")!);
    const { paths, root, intermediate } = await createCaFiles(str(args, "out")!, trustDomain, bool(args, "force"));
    const day = (d: Date) => d.toISOString().slice(0, 10);
    ctx.out(`Created a CA for trust domain ${trustDomain} in ${paths.dir}`);
    ctx.out(`  ${join(paths.dir, "root.pem")}          root, valid until ${day(root.cert.notAfter)}`);
    ctx.out(`  ${join(paths.dir, "root.key")}          root key (0600): keep it offline once intermediates are cut`);
    ctx.out(`  ${join(paths.dir, "intermediate.pem")}  signing intermediate, valid until ${day(intermediate.cert.notAfter)}`);
    ctx.out(`  ${join(paths.dir, "intermediate.key")}  intermediate key (0600)`);
    ctx.out(`  ${join(paths.dir, "bundle.pem")}        trust bundle for peers`);
    ctx.out(`Next: mesh ca issue --service orders --ca-dir ${paths.dir}`);
    return 0;
  },
};
