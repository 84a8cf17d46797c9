import { commit, version } from "../core/version.ts";
import type { CommandSpec } from "./args.ts";

export const versionCommand: CommandSpec = {
  name: "version",
  summary: "Print the version, commit and runtime.",
  async run(_args, ctx) {
    ctx.out(`mesh ${version} (commit ${commit}, bun ${Bun.version}, ${process.platform}/${process.arch})`);
    return 0;
  },
};
