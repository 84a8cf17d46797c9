import { loadCa, bundlePem } from "../../ca/authority.ts";
import { writeFileSet } from "../../core/files.ts";
import { bool, str, type CommandSpec } from "../args.ts";
import { CA_DIR_FLAG, FORCE_FLAG } from "./shared.ts";

export const caBundle: CommandSpec = {
  name: "bundle",
  summary: "Print (or write) the trust bundle: every root that peers should trust.",
  flags: [CA_DIR_FLAG, { name: "out", type: "string", value: "FILE", description: "Write the bundle here instead of printing it." }, FORCE_FLAG],
  async run(args, ctx) {
    const ca = await loadCa(str(args, "ca-dir")!);
    const pem = bundlePem(ca.bundle);
    const out = str(args, "out");
    if (!out) {
      ctx.out(pem.trimEnd());
      return 0;
    }
    writeFileSet([{ path: out, content: pem }], { force: bool(args, "force") });
    ctx.out(`Wrote ${ca.bundle.length} root(s) of ${ca.trustDomain} to ${out}`);
    return 0;
  },
};
