/**
 * Inbound requests on the raw mTLS listener: the caller's SPIFFE ID, proven in the TLS
 * handshake of this very connection, is handed to the local service in
 * `x-mesh-client-id` after any copy the caller sent was removed (headers.ts), and the
 * request is relayed over the pooled HTTP/1.1 client without building Request or
 * Response objects. WebSocket upgrades are tunnelled to the loopback server of
 * inbound.ts, which carries them.
 */
import { errorParts } from "./errors.ts";
import { CLIENT_ID_HEADER, RELAY_SKIP } from "./headers.ts";
import type { InflightTracker } from "./inflight.ts";
import { RequestRecorder, type ProxyMetrics } from "./metrics.ts";
import { peerService } from "./peer-service.ts";
import { RelaySink } from "./relay-sink.ts";
import { Http1Pool, proxyFailureOf } from "./transport/h1/index.ts";
import { prepareRelayed, type PreparedRequest } from "./transport/h1/request-head.ts";
import type { ConnectionHandler, ServerRequest } from "./transport/h1-server/connection.ts";
import type { LoopbackTunnels } from "./transport/h1-server/loopback-tunnel.ts";
import { requestFraming } from "./transport/h1-server/request-framing.ts";
import type { Responder } from "./transport/h1-server/responder.ts";
import type { UpstreamHealth } from "./upstream-health.ts";

export interface InboundHandlerDeps {
  pool: Http1Pool;
  /** The local service's origin, for error messages. */
  origin: string;
  metrics: ProxyMetrics;
  tracker: InflightTracker;
  tunnels: LoopbackTunnels;
  health?: UpstreamHealth;
}

export function inboundHandler(deps: InboundHandlerDeps): ConnectionHandler {
  const { metrics, tracker } = deps;
  const recorder = new RequestRecorder(metrics, "inbound", false);
  return {
    refused: (reason) => metrics.refused.inc({ direction: "inbound", reason }),
    upgrade: (conn, initial) => deps.tunnels.open(conn, initial),
    request(req: ServerRequest, res: Responder) {
      const started = performance.now();
      const caller = req.peer!;
      const peer = peerService(caller);
      const head = req.head;
      let prepared: PreparedRequest;
      try {
        prepared = prepareRelayed(head.method, head.pathAndQuery, head.host, head.fields, RELAY_SKIP, head.connectionTokens, `${CLIENT_ID_HEADER}: ${caller}\r\n`, requestFraming(head));
      } catch (err) {
        metrics.refused.inc({ direction: "inbound", reason: "header-value" });
        const e = errorParts("bad-request", (err as Error).message, { connection: "close" });
        return res.respond(e.status, e.headers, e.body);
      }
      tracker.start();
      const finish = (status: number, headAt: number) => {
        // Latency is to the response head, as the metric says; the request counts once it is over.
        recorder.record(peer, status, (headAt || performance.now()) - started);
        tracker.end();
      };
      const sink: RelaySink = new RelaySink(
        res,
        (err) => {
          deps.health?.onResult(false);
          const e = errorParts(proxyFailureOf(err), `local service ${deps.origin}: ${err.message}`);
          res.respond(e.status, e.headers, e.body);
          finish(e.status, 0);
        },
        () => {
          deps.health?.onResult(sink.status < 500);
          finish(sink.status, sink.headAt);
        },
      );
      deps.pool.dispatch(prepared, req.body, sink);
    },
  };
}
