import type { CommandSpec } from "../args.ts";
import { caBundle } from "./bundle.ts";
import { caInit } from "./init.ts";
import { caInspect } from "./inspect.ts";
import { caIssue } from "./issue.ts";
import { caRotate } from "./rotate.ts";
import { caSign } from "./sign.ts";

export const caCommand: CommandSpec = {
  name: "ca",
  summary: "The certificate authority: create it, issue and sign workload certificates, inspect, rotate.",
  subcommands: [caInit, caIssue, caSign, caInspect, caBundle, caRotate],
};
