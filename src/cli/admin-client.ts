/**
 * How CLI commands reach a running control plane's admin API: the URL and the token
 * from flags, then the environment, then the defaults a local `mesh control-plane` uses.
 */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { MeshError, UsageError } from "../core/errors.ts";
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

export interface AdminClient {
  url: string;
  call<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
}

export function adminClient(args: Parsed): AdminClient {
  const url = (str(args, "admin-url") ?? process.env.MESH_ADMIN_URL ?? "http://127.0.0.1:15011").replace(/\/+$/, "");
  const token = adminToken(args);
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
      if (res.status === 401) throw new AdminTokenRefused(`the control plane refused the admin token: ${(parsed as { error?: string }).error ?? ""}`);
      return { status: res.status, body: parsed as T };
    },
  };
}

function adminToken(args: Parsed): string {
  const file = str(args, "admin-token-file");
  if (file) {
    if (!existsSync(file)) throw new UsageError(`no such file "${file}"`, "--admin-token-file");
    return readFileSync(file, "utf8").trim();
  }
  if (process.env.MESH_ADMIN_TOKEN) return process.env.MESH_ADMIN_TOKEN.trim();
  const local = join("data", ADMIN_TOKEN_FILE);
  if (existsSync(local)) return readFileSync(local, "utf8").trim();
  throw new UsageError(
    `no admin token: ${resolve(local)} (the default, ./${local}) does not exist; run from the directory 'mesh control-plane' runs in, or give --admin-token-file <data-dir>/${ADMIN_TOKEN_FILE} or set $MESH_ADMIN_TOKEN`,
    "--admin-token-file",
  );
}
