import { runValidate } from "../config/validate.ts";
import { strs, type CommandSpec } from "./args.ts";

export const validateCommand: CommandSpec = {
  name: "validate",
  summary: "Check manifests (YAML or JSON, one or many per file) and print every error with file, document and field.",
  description: "Exit 0 with a one-line summary when all are valid, 1 when any is not: usable as a CI stage.",
  flags: [{ name: "file", short: "f", type: "strings", value: "FILE|DIR", required: true, description: "A manifest file, or a directory walked for *.yaml, *.yml and *.json." }],
  examples: ["mesh validate -f policies/", "mesh validate -f services.yaml -f proxy.yaml"],
  async run(args, ctx) {
    return runValidate(strs(args, "file"), { out: ctx.out, err: ctx.err });
  },
};
