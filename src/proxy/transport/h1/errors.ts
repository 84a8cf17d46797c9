/**
 * Why an upstream exchange failed, typed so the caller can decide what is safe to retry:
 * `requestSent: false` means no byte of the request reached the upstream (retry anywhere);
 * `true` means it may have been processed (retry only what is idempotent, never a
 * request whose body was streamed).
 */
import { PeerIdentityError, type ProxyFailure } from "../../errors.ts";

export { PeerIdentityError };

/** `limit`: this proxy holds its limit of upstream connections (dial.ts); not the endpoint's doing. */
export type ConnectFailure = "refused" | "reset" | "timeout" | "tls" | "closed" | "limit";

/** The connection never became usable: TCP refused or reset, connect timeout, TLS failure, pool closed, our own limit. */
export class ConnectError extends Error {
  override readonly name = "ConnectError";
  readonly requestSent = false;
  constructor(
    message: string,
    readonly reason: ConnectFailure,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The connection closed or reset before the response head was complete. */
export class ResetError extends Error {
  override readonly name = "ResetError";
  constructor(
    message: string,
    readonly requestSent: boolean,
    /** Response bytes received before the close (0 for the keep-alive race). */
    readonly responseBytes = 0,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * The keep-alive race (pool.ts): a reused connection closed before a single response
 * byte, and either no request byte was accepted or the request may be sent again.
 */
export function isKeepAliveRace(err: unknown, replayable: boolean): boolean {
  return err instanceof ResetError && err.responseBytes === 0 && (!err.requestSent || replayable);
}

/** The caller's signal fired with a TimeoutError (e.g. AbortSignal.timeout or the proxy's deadline). */
export class TimeoutError extends Error {
  override readonly name = "TimeoutError";
  constructor(
    message: string,
    readonly requestSent: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The caller's signal fired for any other reason; `cause` is the signal's reason. */
export class AbortedError extends Error {
  override readonly name = "AbortError";
  constructor(
    message: string,
    readonly requestSent: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The failure a request's signal caused: a TimeoutError when its reason is one, an AbortedError otherwise. */
export function abortError(reason: unknown, requestSent: boolean): Error {
  const r = reason as { name?: unknown; message?: unknown } | undefined;
  const message = typeof r?.message === "string" && r.message ? r.message : "request aborted";
  return r?.name === "TimeoutError" ? new TimeoutError(message, requestSent, { cause: reason }) : new AbortedError(message, requestSent, { cause: reason });
}

/** The upstream's response is malformed or ambiguous (smuggling risk); the connection is destroyed. */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  readonly requestSent = true;
}

/** The request body ended early, ran long against its content-length, or its stream failed. */
export class RequestBodyError extends Error {
  override readonly name = "RequestBodyError";
  readonly requestSent = true;
}

/** Whether the upstream may have seen (part of) the request. PeerIdentityError: never. */
export function requestMayHaveBeenSent(err: unknown): boolean {
  if (err instanceof PeerIdentityError) return false;
  const sent = (err as { requestSent?: unknown } | null)?.requestSent;
  return typeof sent === "boolean" ? sent : true;
}

/** How the proxy reports an error from this client (see ../../errors.ts). */
export function proxyFailureOf(err: unknown): ProxyFailure {
  if (err instanceof PeerIdentityError) return "peer-identity";
  if (err instanceof ConnectError) return err.reason === "limit" ? "overflow" : "connect-failure";
  if (err instanceof TimeoutError) return "timeout";
  return "upstream-reset";
}

/** A failed TCP connect, named by the endpoint and told apart as refused or reset. */
export function connectErrorOf(err: Error, endpoint: { host: string; port: number }): ConnectError {
  const code = (err as { code?: unknown }).code;
  const reason = code === "ECONNREFUSED" ? "refused" : "reset";
  return new ConnectError(`connect to ${endpoint.host}:${endpoint.port} failed: ${err.message}${typeof code === "string" ? ` (${code})` : ""}`, reason, { cause: err });
}
