/** `mesh join-token`: make, list and revoke the tokens new sidecars trade for their first certificate. */
import { existsSync } from "node:fs";
import { CantCreateError, DataError, MeshError, UsageError, errorMessage } from "../core/errors.ts";
import { writeFileSet } from "../core/files.ts";
import { ADMIN_FLAGS, adminClient, type AdminClient } from "./admin-client.ts";
import { bool, str, type CommandSpec } from "./args.ts";
import { countFlag, durationFlag } from "./flags.ts";
import { MAX_JOIN_TTL_MS, MAX_MULTI_USE_JOIN_TTL_MS } from "../control-plane/join-token.ts";
import { MAX_JOIN_USES, type TokenSummary } from "../control-plane/join-token-records.ts";
import { isControlPlane } from "../control-plane/well-known.ts";
import { nameProblem } from "../pki/spiffe.ts";

interface Issued {
  token: string;
  id: string;
  identity: string;
  uses: number;
  expiresAt: string;
  error?: string;
}

// --uses and --ttl are held to the control plane's bounds here, so a value out of range is a usage error (exit 64) naming its flag.

function checkedUses(text: string | undefined): number {
  const uses = countFlag(text, "--uses", "uses") ?? 1;
  if (uses > MAX_JOIN_USES) throw new UsageError(`at most ${MAX_JOIN_USES} uses, got ${uses}`, "--uses");
  return uses;
}

function checkTtl(text: string, uses: number): void {
  const ms = durationFlag(text, "--ttl");
  const max = uses > 1 ? MAX_MULTI_USE_JOIN_TTL_MS : MAX_JOIN_TTL_MS;
  const multiUseNote = uses > 1 ? "" : ` (${MAX_MULTI_USE_JOIN_TTL_MS / 3600_000}h with --uses above 1)`;
  if (ms <= 0 || ms > max) throw new UsageError(`expected a lifetime above 0 and at most ${max / 3600_000}h${multiUseNote}, got "${text}"`, "--ttl");
}

/** Writes the minted token to `out`; if that fails, revokes it, so no live token is left that nobody holds. */
async function writeTokenOrRevoke(client: AdminClient, issued: Issued, out: string, force: boolean): Promise<void> {
  try {
    writeFileSet([{ path: out, content: issued.token + "\n", secret: true }], { force });
  } catch (err) {
    const reason = err instanceof MeshError ? err.message : `cannot write ${out}: ${errorMessage(err)}`;
    const revoked = await revokeQuietly(client, issued.id);
    throw new CantCreateError(`${reason}; join token ${issued.id} ${revoked ? "revoked" : `NOT revoked: run 'mesh join-token revoke ${issued.id}'`}`);
  }
}

/** Whether the control plane revoked token `id`; a failure to ask is reported by the caller, not thrown over the first error. */
async function revokeQuietly(client: AdminClient, id: string): Promise<boolean> {
  try {
    return (await client.call("DELETE", `/v1/join-tokens/${encodeURIComponent(id)}`)).status === 200;
  } catch {
    return false;
  }
}

const listCommand: CommandSpec = {
  name: "list",
  summary: "List the join tokens not yet expired, used-up ones included: id, identity, uses left, expiry. Never the tokens themselves.",
  flags: [...ADMIN_FLAGS],
  examples: ["mesh join-token list"],
  async run(args, ctx) {
    const { status, body } = await adminClient(args).call<{ items: TokenSummary[]; error?: string }>("GET", "/v1/join-tokens");
    if (status !== 200) throw new MeshError(`cannot list join tokens (${status}): ${body.error}`);
    const now = Date.now();
    const live = body.items.filter((t) => Date.parse(t.expiresAt) > now);
    if (!live.length) ctx.out("no join tokens");
    for (const t of live) ctx.out(`${t.id}  ${t.spiffeId}  ${t.uses - t.used} of ${t.uses} uses left  expires ${t.expiresAt}${t.lastUsedAt ? `  last used ${t.lastUsedAt}` : ""}`);
    return 0;
  },
};

const revokeCommand: CommandSpec = {
  name: "revoke",
  summary: "Revoke a join token: it is refused from now on. Certificates already issued with it stay valid.",
  flags: [...ADMIN_FLAGS],
  positionals: [{ name: "ID", description: "The token's id, as 'mesh join-token' printed it or 'mesh join-token list' shows it.", required: true }],
  examples: ["mesh join-token revoke 1b4e28ba-2fa1-11d2-883f-0016d3cca427"],
  async run(args, ctx) {
    const id = args.positionals[0]!;
    const { status, body } = await adminClient(args).call<{ error?: string }>("DELETE", `/v1/join-tokens/${encodeURIComponent(id)}`);
    if (status === 404) throw new DataError(body.error ?? "no such token", id);
    if (status !== 200) throw new MeshError(`revoke refused (${status}): ${body.error}`);
    ctx.out(`join token ${id} revoked`);
    return 0;
  },
};

export const joinTokenCommand: CommandSpec = {
  name: "join-token",
  summary: "Make, list and revoke the join tokens new sidecars trade for their first certificate.",
  description:
    "Prints the token (or writes it to --out) and, on stderr, its id for 'mesh join-token revoke'.\n" +
    "A token of several uses is for replicas that start from one secret (a Kubernetes Deployment, an\n" +
    "autoscaling group): it may live up to 720h; revoke it when the secret is replaced.",
  flags: [
    { name: "service", type: "string", value: "NAME", required: true, description: "The service the token grants." },
    { name: "namespace", short: "n", type: "string", value: "NS", default: "default", description: "Its namespace." },
    { name: "ttl", type: "string", value: "DURATION", default: "10m", description: "How long the token can be used (at most 24h; 720h with --uses above 1)." },
    { name: "uses", type: "string", value: "N", default: "1", description: "How many sidecars may redeem it (at most 10000)." },
    { name: "out", type: "string", value: "FILE", description: "Write the token to FILE (mode 0600) instead of printing it." },
    { name: "force", type: "boolean", description: "Overwrite --out if it exists." },
    ...ADMIN_FLAGS,
  ],
  subcommands: [listCommand, revokeCommand],
  examples: ["mesh join-token --service orders --out orders.token", "mesh join-token --service orders --uses 50 --ttl 720h --out orders.token"],
  async run(args, ctx) {
    const service = str(args, "service")!;
    const namespace = str(args, "namespace")!;
    // Checked here as the control plane checks them, so a bad name is a usage error (exit 64) naming its flag.
    for (const [flag, kind, name] of [["--service", "service", service], ["--namespace", "namespace", namespace]] as const) {
      const bad = nameProblem(kind, name);
      if (bad) throw new UsageError(bad, flag);
    }
    if (isControlPlane(namespace, service)) throw new UsageError("the control plane's own identity, which sidecars trust as the control plane: no workload is given it", "--service");
    const uses = checkedUses(str(args, "uses"));
    const ttl = str(args, "ttl")!;
    checkTtl(ttl, uses);
    const out = str(args, "out");
    const force = bool(args, "force");
    // Refused before minting: a token made and then not written would be live with nobody holding it.
    if (out && !force && existsSync(out)) throw new CantCreateError("already exists; pass --force to overwrite", out);
    const client = adminClient(args);
    const { status, body } = await client.call<Issued>("POST", "/v1/join-tokens", {
      service,
      namespace,
      ttl,
      uses,
    });
    if (status !== 200) throw new DataError(`no token (${status}): ${body.error}`);
    // A token is a credential: written 0600, never left readable by a shell redirect's umask.
    if (out) await writeTokenOrRevoke(client, body, out, force);
    else ctx.out(body.token);
    ctx.err(`join token ${body.id} for ${body.identity}: ${body.uses} use${body.uses === 1 ? "" : "s"}, expires ${body.expiresAt}`);
    return 0;
  },
};
