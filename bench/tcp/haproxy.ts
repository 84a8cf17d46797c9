/**
 * The haproxy pair for opaque TCP, built as the HTTP/1.1 bench's (bench/haproxy.ts: one
 * thread each, mesh's own certificates, certificate and key in one PEM): the caller's side
 * takes plain TCP and connects to the callee's side over TLS, presenting orders' chain and
 * verifying the callee's chain against bundle.pem and, by `verifyhost`, its CN (`payments`:
 * haproxy cannot check a SPIFFE URI SAN); the callee's side requires and verifies the
 * caller's certificate, and connects to the echo service in plain TCP. `mode tcp`: bytes,
 * no parsing. TLS session reuse towards the callee is haproxy's default, and TLS 1.3 with
 * the suite mesh's sidecars negotiate (TLS13_SUITE).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { freePort } from "../../test/helpers/ports.ts";
import { SERVICE_HOST } from "../check.ts";
import { findTool } from "../external.ts";
import { combinedPem, start } from "../haproxy.ts";
import type { BuildContext, TcpSetup } from "./topology.ts";

/**
 * The TLS 1.3 suite two mesh sidecars agree on (BoringSSL's first choice, checked with
 * getCipher()); OpenSSL's own first choice is AES-256-GCM, which costs more per byte, and
 * bulk throughput is bound by it. Both pairs do the same cryptography.
 */
export const TLS13_SUITE = "TLS_AES_128_GCM_SHA256";

const GLOBAL = `
global
  nbthread 1
  maxconn 4096
  ssl-default-bind-ciphersuites ${TLS13_SUITE}
  ssl-default-server-ciphersuites ${TLS13_SUITE}
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
`;

function scratch(ctx: BuildContext, name: string): string {
  const dir = join(ctx.tmp, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

export async function haproxyPair(ctx: BuildContext): Promise<TcpSetup> {
  if (!findTool("haproxy")) return { ok: false, id: "haproxy-pair", status: "skipped", reason: "haproxy is not installed (apt-get install -y haproxy)" };
  try {
    const [calleePort, callerPort] = [freePort(), freePort()];
    const calleeDir = scratch(ctx, "haproxy-tcp-payments");
    const callee = `${GLOBAL}
frontend callee
  bind 127.0.0.1:${calleePort} ssl crt ${combinedPem(calleeDir, ctx.certs.payments)} ca-file ${join(ctx.certs.payments, "bundle.pem")} verify required
  default_backend echo
backend echo
  server s1 127.0.0.1:${ctx.echo.port}
`;
    const calleePids = await start("haproxy-pair/payments", calleeDir, callee, calleePort);
    const callerDir = scratch(ctx, "haproxy-tcp-orders");
    const caller = `${GLOBAL}
frontend caller
  bind 127.0.0.1:${callerPort}
  default_backend callee
backend callee
  server s1 127.0.0.1:${calleePort} ssl crt ${combinedPem(callerDir, ctx.certs.orders)} ca-file ${join(ctx.certs.orders, "bundle.pem")} verify required verifyhost ${SERVICE_HOST}
`;
    const callerPids = await start("haproxy-pair/orders", callerDir, caller, callerPort);
    return {
      ok: true,
      topology: {
        id: "haproxy-pair",
        port: callerPort,
        echo: ctx.echo,
        proxies: [
          { label: "caller", pids: callerPids },
          { label: "callee", pids: calleePids },
        ],
      },
    };
  } catch (err) {
    return { ok: false, id: "haproxy-pair", status: "failed", reason: (err as Error).message };
  }
}
