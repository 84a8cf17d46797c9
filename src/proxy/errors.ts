/**
 * Proxy failures become HTTP responses here and nowhere else, so a client always
 * learns why in the same way: a status, and `x-mesh-error` naming the cause.
 */
export type ProxyFailure =
  | "no-route"
  | "no-healthy-endpoints"
  | "connect-failure"
  | "upstream-reset"
  | "timeout"
  | "overflow"
  | "peer-identity"
  | "bad-request"
  | "unauthenticated"
  | "forbidden"
  | "rate-limited"
  | "not-ready"
  /** An HTTPRoute's fault injection answered instead of the service (its status replaces this one). */
  | "fault";

const STATUS: Record<ProxyFailure, number> = {
  "no-route": 404,
  "no-healthy-endpoints": 503,
  "connect-failure": 502,
  "upstream-reset": 502,
  timeout: 504,
  overflow: 503,
  "peer-identity": 502,
  "bad-request": 400,
  unauthenticated: 401,
  forbidden: 403,
  "rate-limited": 429,
  "not-ready": 503,
  fault: 503,
};

/**
 * Recorded (never sent) for a request whose caller left before its response head: nginx's
 * "client closed request", so metrics do not count it against the service.
 */
export const CLIENT_CLOSED_STATUS = 499;

export interface ErrorParts {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The status, headers and body of the answer to `failure`, for a Response or a raw Responder. */
export function errorParts(failure: ProxyFailure, detail: string, extra: Record<string, string> = {}): ErrorParts {
  return {
    status: STATUS[failure],
    headers: { "content-type": "text/plain; charset=utf-8", "x-mesh-error": failure, ...extra },
    body: `mesh: ${failure}: ${detail}\n`,
  };
}

/**
 * Why the proxy answered a request itself, for its log line and metric: the x-mesh-error
 * of its answer and, for an overflow, the limit reached (x-mesh-overflow). Envoy's response
 * flags (UO, NR, UF...) tell the same: a proxy's 503 from a service's own.
 */
export interface ReplyCause {
  error: string;
  limit: string | undefined;
}

/** The cause of the answer `e`, which the proxy made itself. */
export function causeOf(e: ErrorParts): ReplyCause {
  return { error: e.headers["x-mesh-error"] ?? "internal", limit: e.headers["x-mesh-overflow"] };
}

export function errorResponse(failure: ProxyFailure, detail: string, extra: Record<string, string> = {}): Response {
  return responseOf(errorParts(failure, detail, extra));
}

export function responseOf(e: ErrorParts): Response {
  return new Response(e.body, { status: e.status, headers: e.headers });
}

/** For a handler that threw: a plain 500, never Bun's development error page (which shows source and stack). */
export const INTERNAL_ERROR: ErrorParts = {
  status: 500,
  headers: { "content-type": "text/plain; charset=utf-8", "x-mesh-error": "internal", connection: "close" },
  body: "mesh: internal error\n",
};

export function internalErrorResponse(): Response {
  return responseOf(INTERNAL_ERROR);
}

/** Raised from a TLS server check: the peer is not the identity the destination requires. */
export class PeerIdentityError extends Error {
  override readonly name = "PeerIdentityError";
}

/** Classifies an error thrown by fetch while connecting or before response headers arrived. */
export function classifyFetchError(err: unknown): ProxyFailure {
  if (err instanceof PeerIdentityError) return "peer-identity";
  const e = err as { code?: string; name?: string; message?: string };
  const text = `${e.code ?? ""} ${e.name ?? ""} ${e.message ?? ""}`;
  if (/Timeout|TimeoutError|timed out/i.test(text)) return "timeout";
  if (/CERT|certificate|identity|TLS|SSL|handshake/i.test(text)) return "peer-identity";
  if (/ECONNREFUSED|ConnectionRefused|Unable to connect|ENOTFOUND|EHOSTUNREACH|FailedToOpenSocket/i.test(text)) return "connect-failure";
  return "upstream-reset";
}
