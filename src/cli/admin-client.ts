/**
 * How CLI commands reach a running control plane's admin API: the URL and the token
 * from flags, then the environment, then the defaults a local `mesh control-plane` uses.
 */
import { readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { DataError, errorMessage, MeshError, UsageError } from "../core/errors.ts";
import { ADMIN_TOKEN_FILE } from "./control-plane-settings.ts";
import { str, type FlagSpec, type Parsed } from "./args.ts";

export const ADMIN_FLAGS: FlagSpec[] = [
  { name: "admin-url", type: "string", value: "URL", description: "Control plane admin API (or $MESH_ADMIN_URL; default http://127.0.0.1:15011)." },
  { name: "admin-token-file", type: "string", value: "FILE", description: "Admin token (or $MESH_ADMIN_TOKEN; default ./data/admin-token)." },
];

/** The control plane answered, and refused the admin token (401): it is up, only the token is wrong. */
export class AdminTokenRefused extends MeshError {
  override readonly name = "AdminTokenRefused";
}

/** Past the store's own retry window (15 s), so a store outage is answered (503) before this gives up; a hung control plane still ends the command. */
const ADMIN_CALL_TIMEOUT_MS = 30_000;

const DEFAULT_ADMIN_URL = "http://127.0.0.1:15011";

export interface AdminClient {
  url: string;
  call<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
}

export function adminClient(args: Parsed): AdminClient {
  const url = adminUrl(args);
  const { token, from } = adminToken(args);
  return {
    url,
    async call<T>(method: string, path: string, body?: unknown) {
      let res: Response;
      try {
        res = await fetch(url + path, {
          method,
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(ADMIN_CALL_TIMEOUT_MS),
        });
      } catch (err) {
        if ((err as Error).name === "TimeoutError") throw new MeshError(`the control plane at ${url} did not answer ${method} ${path} within ${ADMIN_CALL_TIMEOUT_MS / 1000} s; see its log`);
        throw new MeshError(`cannot reach the control plane at ${url}: ${(err as Error).message}; is 'mesh control-plane' running?`);
      }
      const text = await res.text();
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new MeshError(`${url}${path} answered ${res.status} with non-JSON: ${text.slice(0, 200)}`);
      }
      if (res.status === 401) throw new AdminTokenRefused(`the control plane refused the admin token (from ${from}): ${(parsed as { error?: string }).error ?? ""}`);
      return { status: res.status, body: parsed as T };
    },
  };
}

/** The admin API's URL, checked here: a malformed one would otherwise read as a control plane that is down. */
function adminUrl(args: Parsed): string {
  const flag = str(args, "admin-url");
  const env = process.env.MESH_ADMIN_URL || undefined;
  const text = flag ?? env ?? DEFAULT_ADMIN_URL;
  const problem = adminUrlProblem(text);
  if (problem) throw new UsageError(problem, flag !== undefined ? "--admin-url" : "$MESH_ADMIN_URL");
  return text.replace(/\/+$/, "");
}

function adminUrlProblem(text: string): string | undefined {
  const expected = `expected an http:// or https:// URL with a port 1-65535, like ${DEFAULT_ADMIN_URL}, got "${text}"`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return expected;
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.port === "0") return expected;
  // The token goes in a header; a user, query or fragment here would be dropped or garble every call's path.
  if (url.username || url.password || url.search || url.hash) return `expected scheme, host, port and path only, like ${DEFAULT_ADMIN_URL}, got "${text}"`;
  return undefined;
}

/** The token, and where it came from: a refusal names it, so the user knows which to fix. */
function adminToken(args: Parsed): { token: string; from: string } {
  const file = str(args, "admin-token-file");
  if (file) return { token: tokenFromFile(file, "--admin-token-file"), from: file };
  const env = process.env.MESH_ADMIN_TOKEN;
  if (env) {
    if (!env.trim()) throw new UsageError("holds only white space; expected the admin token", "$MESH_ADMIN_TOKEN");
    return { token: env.trim(), from: "$MESH_ADMIN_TOKEN" };
  }
  const local = join("data", ADMIN_TOKEN_FILE);
  if (statSync(local, { throwIfNoEntry: false })) return { token: tokenFromFile(resolve(local)), from: resolve(local) };
  throw new UsageError(
    `no admin token: ${resolve(local)} (the default, ./${local}) does not exist; run from the directory 'mesh control-plane' runs in, or give --admin-token-file <data-dir>/${ADMIN_TOKEN_FILE} or set $MESH_ADMIN_TOKEN`,
    "--admin-token-file",
  );
}

/** The token in `file`; an error names the file, after `where` (the flag) when it was given. */
function tokenFromFile(file: string, where?: string): string {
  const stat = statSync(file, { throwIfNoEntry: false });
  if (!stat) throw new UsageError(`no such file "${file}"`, where);
  // Only a directory is refused before reading: a pipe (`--admin-token-file <(…)`) is a fine source.
  if (stat.isDirectory()) throw new UsageError(`"${file}" is a directory; expected the admin token file, <data-dir>/${ADMIN_TOKEN_FILE}`, where);
  let token: string;
  try {
    token = readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new DataError(`cannot read "${file}": ${errorMessage(err)}`, where);
  }
  // Sent, an empty token would only come back as "admin credential refused", naming no file.
  if (!token) throw new DataError(`"${file}" is empty; expected the admin token 'mesh control-plane' wrote to <data-dir>/${ADMIN_TOKEN_FILE}`, where);
  return token;
}
