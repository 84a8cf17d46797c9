/**
 * The nginx pair for gRPC, built like the HTTP/1.1 bench's (bench/nginx.ts: one worker
 * each, mesh's own certificates from `mesh ca issue`): the outbound takes h2c
 * (`listen … http2`) and passes each call with `grpc_pass grpcs://` over mTLS (presents
 * orders' chain, verifies the inbound's chain against bundle.pem and its name, the SVID's
 * CN `payments`: nginx cannot check a SPIFFE URI SAN; reuses TLS sessions; keeps upstream
 * connections alive); the inbound requires and verifies the client's certificate and
 * passes each call to the service over h2c (`grpc_pass grpc://`), keep-alive too. nginx's
 * gRPC proxy carries one call per upstream connection at a time, so its pools hold up to
 * as many connections as calls in flight, where mesh multiplexes them on one session.
 */
import { join } from "node:path";
import { freePort } from "../../test/helpers/ports.ts";
import { findTool } from "../external.ts";
import { conf, KEEPALIVE, requireClientCertificate, start } from "../nginx.ts";
import { AUTHORITY } from "./wire.ts";
import type { BuildContext, GrpcSetup } from "./topology.ts";

function inboundServers(port: number, servicePort: number, certs: string): string {
  return `
  upstream service { server 127.0.0.1:${servicePort};${KEEPALIVE}
  }
  server {
    listen 127.0.0.1:${port} ssl http2;${requireClientCertificate(certs)}
    location / {
      grpc_pass grpc://service;
      # The caller's identity to the service, as mesh's inbound passes it (here its subject DN).
      grpc_set_header x-mesh-client-id $ssl_client_s_dn;
    }
  }`;
}

function outboundServers(port: number, inboundPort: number, certs: string): string {
  return `
  upstream inbound { server 127.0.0.1:${inboundPort};${KEEPALIVE}
  }
  server {
    listen 127.0.0.1:${port} http2;
    location / {
      grpc_pass grpcs://inbound;
      grpc_ssl_certificate ${join(certs, "chain.pem")};
      grpc_ssl_certificate_key ${join(certs, "key.pem")};
      grpc_ssl_trusted_certificate ${join(certs, "bundle.pem")};
      grpc_ssl_verify on;
      grpc_ssl_verify_depth 3;
      grpc_ssl_name ${AUTHORITY};
      grpc_ssl_session_reuse on;
    }
  }`;
}

export async function nginxPair(ctx: BuildContext): Promise<GrpcSetup> {
  const nginx = findTool("nginx");
  if (!nginx) return { ok: false, id: "nginx-pair", status: "skipped", reason: "nginx is not installed (apt-get install -y nginx)" };
  try {
    const [inPort, outPort] = [freePort(), freePort()];
    const inDir = join(ctx.tmp, "nginx-grpc-in");
    const inPids = await start("nginx-pair/inbound", inDir, conf(inDir, inboundServers(inPort, ctx.service.port, ctx.certs.payments)), inPort, nginx);
    const outDir = join(ctx.tmp, "nginx-grpc-out");
    const outPids = await start("nginx-pair/outbound", outDir, conf(outDir, outboundServers(outPort, inPort, ctx.certs.orders)), outPort, nginx);
    return {
      ok: true,
      topology: {
        id: "nginx-pair",
        port: outPort,
        service: ctx.service,
        proxies: [
          { label: "outbound", pids: outPids },
          { label: "inbound", pids: inPids },
        ],
        // nginx answers its own failures with HTTP 502/504, which h2load counts.
      },
    };
  } catch (err) {
    const message = (err as Error).message;
    // A build without the gRPC or HTTP/2 module cannot run this pair: "not here", not broken.
    if (/unknown directive "grpc_|invalid parameter "http2"/.test(message)) return { ok: false, id: "nginx-pair", status: "skipped", reason: `this nginx lacks the gRPC or HTTP/2 module: ${message}` };
    return { ok: false, id: "nginx-pair", status: "failed", reason: message };
  }
}
