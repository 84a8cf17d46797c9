/**
 * What an exchange failed with when its connection closed under it (no error of our own):
 * told apart by how far the response got and by the socket's last error, because whether
 * the request may be sent again depends on it (errors.ts, outbound-call.ts).
 */
import { ConnectError, ResetError } from "./errors.ts";
import { Phase, type Exchange } from "./exchange.ts";
import { StreamRefusedError } from "../mux/frame.ts";

/** `lastError`: what the socket reported before it closed, if anything; `endpoint`: host:port. */
export function closeError(ex: Exchange, lastError: Error | undefined, endpoint: string): Error {
  const why = lastError ? ` (${lastError.message})` : "";
  if (ex.phase === Phase.Body) return new ResetError(`upstream closed the connection before the response body was complete${why}`, true, ex.received);
  // The server refused the stream unread (draining, or full): as safe to resend as a failed
  // connect, unless its body went into it (that copy is gone, so it cannot be sent again),
  // or it had begun to answer: a refusal after response bytes is a peer that did process it.
  if (lastError instanceof StreamRefusedError && ex.req.framing.kind === "none" && ex.received === 0)
    return new ConnectError(`${endpoint} refused the stream: ${lastError.message}`, "refused", { cause: lastError });
  // A TLS alert before any response byte: the server refused the session (e.g. our
  // certificate) and processed nothing, whatever we wrote into it.
  if (ex.received === 0 && (lastError as { code?: unknown } | undefined)?.code === "EPROTO")
    return new ConnectError(`TLS session with ${endpoint} refused: ${lastError!.message}`, "tls", { cause: lastError });
  const what = ex.received === 0 ? "before responding" : "in the middle of the response head";
  return new ResetError(`upstream closed the connection ${what}${why}`, ex.wrote, ex.received, lastError ? { cause: lastError } : undefined);
}
