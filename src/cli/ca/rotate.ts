import { MeshError, UsageError } from "../../core/errors.ts";
import { completeRootRotation, rotateIntermediate, rotateRoot } from "../../ca/rotate.ts";
import type { LoadedCa } from "../../ca/authority.ts";
import { bool, str, type CommandSpec, type Parsed } from "../args.ts";
import { ADMIN_FLAGS, adminClient } from "../admin-client.ts";
import { CA_DIR_FLAG } from "./shared.ts";
import { completionBlockers } from "./completion-blockers.ts";

const FORCE_HINT = "--force completes without asking (only when no control plane signs from this directory, or you have checked every sidecar yourself)";

/** Refuses unless a running control plane confirms no sidecar would be locked out, or --force. */
function confirmWithControlPlane(args: Parsed): (ca: LoadedCa) => Promise<void> {
  return async (ca) => {
    if (bool(args, "force")) return;
    let blockers: string[];
    try {
      blockers = await completionBlockers(ca, adminClient(args));
    } catch (err) {
      throw new MeshError(`cannot ask a control plane whether every sidecar is on the current root: ${(err as Error).message}\n${FORCE_HINT}`);
    }
    if (blockers.length) throw new MeshError(`not completed; dropping the old roots now would lock sidecars out:\n- ${blockers.join("\n- ")}\n'mesh check' follows the rotation; ${FORCE_HINT}`);
  };
}

export const caRotate: CommandSpec = {
  name: "rotate",
  summary: "Replace the signing intermediate; with --root, start a root rotation; with --complete, end it.",
  description:
    "Without flags: a new intermediate signed by the current root; existing leaves stay valid.\n" +
    "--root: a new root and intermediate; bundle.pem trusts old and new roots during the overlap.\n" +
    "  Distribute the new bundle to every peer, re-issue leaves, then run --complete.\n" +
    "  A running control plane on this directory sends the bundle to its sidecars at once and\n" +
    "  signs under the old root until restarted: restart it, let every leaf renew under the new\n" +
    "  root, then run --complete ('mesh check' says when each step may follow).\n" +
    "--complete: bundle.pem trusts only the current root. It first asks the control plane (--admin-url,\n" +
    "  --admin-token-file, as 'mesh check' does) and refuses while a replica signs under the old root or\n" +
    "  a registered sidecar holds a certificate that does not chain to the current root; --force skips that.\n" +
    "Replaced certificates are kept under <ca-dir>/retired/.",
  flags: [
    CA_DIR_FLAG,
    { name: "root", type: "boolean", description: "Rotate the root too (starts an overlap period)." },
    { name: "complete", type: "boolean", description: "End a root overlap: drop old roots from the bundle." },
    { name: "force", type: "boolean", description: "With --complete: do not ask a control plane first." },
    ...ADMIN_FLAGS,
  ],
  async run(args, ctx) {
    const dir = str(args, "ca-dir")!;
    if (bool(args, "root") && bool(args, "complete")) throw new UsageError("--root and --complete are separate steps; run them apart");
    if (bool(args, "force") && !bool(args, "complete")) throw new UsageError("--force goes with --complete only", "--force");
    if (bool(args, "complete")) {
      const dropped = await completeRootRotation(dir, confirmWithControlPlane(args));
      ctx.out(`Bundle now trusts only the current root; dropped ${dropped.map((c) => c.serialNumber.slice(0, 16)).join(", ")}`);
      return 0;
    }
    if (bool(args, "root")) {
      const { root, bundle } = await rotateRoot(dir);
      ctx.out(`New root ${root.cert.serialNumber.slice(0, 16)}, valid until ${root.cert.notAfter.toISOString().slice(0, 10)}`);
      ctx.out(`Bundle trusts ${bundle.length} roots during the overlap. Distribute ${dir}/bundle.pem, re-issue leaves,`);
      ctx.out(`then run: mesh ca rotate --complete --ca-dir ${dir}`);
      ctx.out("A control plane running on this directory sends the bundle to its sidecars now; restart it to sign under the new root.");
      ctx.out("'mesh check' says when each next step may follow.");
      return 0;
    }
    const next = await rotateIntermediate(dir);
    ctx.out(`New intermediate ${next.cert.serialNumber.slice(0, 16)}, valid until ${next.cert.notAfter.toISOString().slice(0, 10)}`);
    return 0;
  },
};
