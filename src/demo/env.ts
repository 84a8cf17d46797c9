/**
 * Everything in the demo talks over loopback; an HTTP proxy in the user's environment
 * (which Bun's fetch honours, even for 127.0.0.1) must not capture that traffic.
 */
const PROXY_VARS = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"];
const LOOPBACK = ["127.0.0.1", "localhost", "::1"];

function withLoopback(current: string | undefined): string {
  const given = (current ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  return [...new Set([...given, ...LOOPBACK])].join(",");
}

/** Exempts loopback from any proxy for this process's own fetches. */
export function bypassProxyForLoopback(): void {
  const value = withLoopback(process.env.NO_PROXY ?? process.env.no_proxy);
  process.env.NO_PROXY = value;
  process.env.no_proxy = value;
}

/** The environment for a child: ours, without proxies and join-token or admin overrides. */
export function childEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  for (const k of [...PROXY_VARS, "MESH_JOIN_TOKEN", "MESH_ADMIN_URL", "MESH_ADMIN_TOKEN"]) delete env[k];
  env.NO_PROXY = env.no_proxy = withLoopback(env.NO_PROXY);
  return env;
}
