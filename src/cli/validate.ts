import { runValidate } from "../config/validate.ts";
import { UsageError } from "../core/errors.ts";
import { strs, type CommandSpec } from "./args.ts";

export const validateCommand: CommandSpec = {
  name: "validate",
  summary: "Check manifests (YAML or JSON, one or many per file) and print every error with file, document and field.",
  description: "Exit 0 with a one-line summary when all are valid, 1 when any is not: usable as a CI stage.",
  flags: [{ name: "file", short: "f", type: "strings", value: "FILE|DIR", description: "A manifest file, or a directory walked for *.yaml, *.yml and *.json; as -f or as an argument." }],
  positionals: [{ name: "PATH", description: "Manifest files, or directories walked for them, as -f takes them.", rest: true }],
  examples: ["mesh validate policies/", "mesh validate -f services.yaml -f proxy.yaml"],
  async run(args, ctx) {
    const files = [...strs(args, "file"), ...args.positionals];
    if (files.length === 0) throw new UsageError("name a manifest file or directory: mesh validate FILE, or -f FILE", "mesh validate");
    return runValidate(files, { out: ctx.out, err: ctx.err });
  },
};
