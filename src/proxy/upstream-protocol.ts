/**
 * Which HTTP the local service speaks, by its own Service's word: the protocol declared
 * for the port its --upstream listens on (a port whose targetPort it is). `http` is
 * HTTP/1.1, so the inbound translates HTTP/2 calls (h2/http1-upstream.ts); `http2` and
 * `grpc` are HTTP/2. Undefined (nothing declared, or ports that disagree) keeps each call
 * in the caller's version.
 */
import type { Service } from "../config/kinds/service.ts";
import type { AuthorizationSubject } from "./authorization.ts";
import { ownService } from "./own-service.ts";

export type UpstreamHttp = "http1" | "http2";

export function upstreamHttpOf(services: readonly Service[], subject: AuthorizationSubject): UpstreamHttp | undefined {
  const own = ownService(services, subject);
  const declared = new Set<UpstreamHttp>();
  for (const p of own?.spec.ports ?? []) {
    if (p.targetPort !== subject.httpPort || p.protocol === undefined || p.protocol === "tcp") continue;
    declared.add(p.protocol === "http" ? "http1" : "http2");
  }
  return declared.size === 1 ? [...declared][0] : undefined;
}
