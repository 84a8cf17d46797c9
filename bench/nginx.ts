/**
 * nginx as the reference proxy: one worker each, keep-alive pools upstream, and for the
 * pair mTLS with mesh's certificates (the inbound requires and verifies the client's
 * chain; the outbound presents its own, verifies the server's chain and name, and reuses
 * TLS sessions). The SVIDs carry the service name as CN and no DNS SAN, so the name check
 * matches the CN: as close as nginx gets to checking the SPIFFE ID.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SERVICE_HOST } from "./check.ts";
import { findTool, startForeground } from "./external.ts";
import { freePort } from "../test/helpers/ports.ts";
import type { BuildContext, Setup, Topology } from "./topology.ts";

/** An upstream's keep-alive pool (also used by bench/grpc/). */
export const KEEPALIVE = `
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 60s;`;

/** A whole nginx.conf: one worker, no access log, temp paths in `dir`, `servers` inside http {} (also used by bench/grpc/). */
export function conf(dir: string, servers: string): string {
  const tmp = (name: string) => `${name}_temp_path ${join(dir, name)};`;
  return `
worker_processes 1;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} warn;
events { worker_connections 4096; }
http {
  access_log off;
  ${["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map(tmp).join("\n  ")}
  keepalive_requests 1000000;
  keepalive_timeout 75s;
${servers}
}
`;
}

/** The server side of mTLS for a `server` block: mesh's chain and key, and a client certificate required and verified against the bundle. */
export function requireClientCertificate(certs: string): string {
  return `
    ssl_certificate ${join(certs, "chain.pem")};
    ssl_certificate_key ${join(certs, "key.pem")};
    ssl_client_certificate ${join(certs, "bundle.pem")};
    ssl_verify_client on;
    ssl_verify_depth 3;
    ssl_session_cache shared:inbound:1m;`;
}

/** Plain proxying to a pooled upstream; `tls` adds the client side of mTLS. */
function location(upstream: string, tls?: { certs: string }): string {
  const ssl = tls
    ? `
      proxy_ssl_certificate ${join(tls.certs, "chain.pem")};
      proxy_ssl_certificate_key ${join(tls.certs, "key.pem")};
      proxy_ssl_trusted_certificate ${join(tls.certs, "bundle.pem")};
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 3;
      proxy_ssl_name ${SERVICE_HOST};
      proxy_ssl_session_reuse on;`
    : "";
  return `
    location / {
      proxy_pass ${tls ? "https" : "http"}://${upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";${ssl}
    }`;
}

/** Writes `text` as DIR/nginx.conf, starts nginx in the foreground and waits for `port`; its pids, worker included. */
export async function start(label: string, dir: string, text: string, port: number, nginx: string): Promise<number[]> {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, "nginx.conf");
  writeFileSync(file, text);
  const errorLog = join(dir, "error.log");
  const cmd = [nginx, "-p", dir, "-c", file, "-e", errorLog, "-g", "daemon off;"];
  const logFile = () => {
    try {
      return readFileSync(errorLog, "utf8");
    } catch {
      return "";
    }
  };
  return (await startForeground(label, cmd, port, { workers: 1, logFile })).pids;
}

function unavailable(shape: "one" | "pair"): Setup | undefined {
  if (findTool("nginx")) return undefined;
  return { ok: false, id: `nginx-${shape}`, family: "nginx", shape, status: "skipped", reason: "nginx is not installed" };
}

export async function nginxOne(ctx: BuildContext): Promise<Setup> {
  const missing = unavailable("one");
  if (missing) return missing;
  try {
    const port = freePort();
    const servers = `
  upstream service { server 127.0.0.1:${ctx.servicePort};${KEEPALIVE}
  }
  server {
    listen 127.0.0.1:${port};${location("service")}
  }`;
    const pids = await start("nginx-one", join(ctx.tmp, "nginx-one"), conf(join(ctx.tmp, "nginx-one"), servers), port, findTool("nginx")!);
    const topology: Topology = { id: "nginx-one", family: "nginx", shape: "one", url: `http://127.0.0.1:${port}/`, proxies: [{ label: "proxy", pids }] };
    return { ok: true, topology };
  } catch (err) {
    return { ok: false, id: "nginx-one", family: "nginx", shape: "one", status: "failed", reason: (err as Error).message };
  }
}

/** `accepts` from stub_status: every connection the server accepted, the reading's own included. */
async function accepts(port: number): Promise<number> {
  // A fresh connection per reading, so every reading adds exactly one accept.
  const res = await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: "close" }, signal: AbortSignal.timeout(3000) });
  const text = await res.text();
  const m = /\n\s*(\d+)\s+\d+\s+\d+/.exec(text);
  if (!m) throw new Error(`unexpected stub_status: ${text}`);
  return Number(m[1]);
}

export async function nginxPair(ctx: BuildContext): Promise<Setup> {
  const missing = unavailable("pair");
  if (missing) return missing;
  try {
    const nginx = findTool("nginx")!;
    const [inPort, statusPort, outPort] = [freePort(), freePort(), freePort()];
    const certs = ctx.certs.payments;
    const inDir = join(ctx.tmp, "nginx-pair-in");
    const inbound = `
  upstream service { server 127.0.0.1:${ctx.servicePort};${KEEPALIVE}
  }
  server {
    listen 127.0.0.1:${inPort} ssl;${requireClientCertificate(certs)}
    location / {
      proxy_pass http://service;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header x-mesh-client-id $ssl_client_s_dn;
    }
  }
  server {
    listen 127.0.0.1:${statusPort};
    location / { stub_status; }
  }`;
    const inPids = await start("nginx-pair/inbound", inDir, conf(inDir, inbound), inPort, nginx);
    const outDir = join(ctx.tmp, "nginx-pair-out");
    const outbound = `
  upstream inbound { server 127.0.0.1:${inPort};${KEEPALIVE}
  }
  server {
    listen 127.0.0.1:${outPort};${location("inbound", { certs: ctx.certs.orders })}
  }`;
    const outPids = await start("nginx-pair/outbound", outDir, conf(outDir, outbound), outPort, nginx);
    const topology: Topology = {
      id: "nginx-pair",
      family: "nginx",
      shape: "pair",
      url: `http://127.0.0.1:${outPort}/`,
      proxies: [
        { label: "outbound", pids: outPids },
        { label: "inbound", pids: inPids },
      ],
      inboundConnections: () => accepts(statusPort),
      connectionsPerReading: 1,
    };
    return { ok: true, topology };
  } catch (err) {
    return { ok: false, id: "nginx-pair", family: "nginx", shape: "pair", status: "failed", reason: (err as Error).message };
  }
}
