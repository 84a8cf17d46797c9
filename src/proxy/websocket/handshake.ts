/**
 * Waiting for the upstream's side of the upgrade, with a deadline, and turning a
 * failure into what the client should be told. Bun's client WebSocket reports a
 * refused upgrade only as an error message ("Expected 101 status code: 403"), so the
 * status is read from there; the upstream's body and headers are not available.
 */
import { classifyFetchError, errorResponse, type ProxyFailure } from "../errors.ts";
import type { ClientWebSocket } from "./client.ts";

export type Handshake = { ok: true } | { ok: false; response: Response; status: number; failure: ProxyFailure | "refused" };

const REFUSED = /Expected 101 status code: (\d{3})/;

/**
 * Resolves once `ws` opens, fails, or `timeoutMs` passes (then it is terminated; 0: no deadline).
 * `identityError` returns the reason our SPIFFE check gave, which Bun replaces with a
 * generic hostname-mismatch message.
 */
export function awaitOpen(ws: ClientWebSocket, timeoutMs: number, what: string, identityError: () => Error | undefined = () => undefined): Promise<Handshake> {
  return new Promise((resolve) => {
    let error: { message?: string; code?: string } | undefined;
    const finish = (h: Handshake) => {
      clearTimeout(timer);
      ws.removeEventListener("open", onOpen);
      ws.removeEventListener("error", onError);
      ws.removeEventListener("close", onClose);
      resolve(h);
    };
    const onOpen = () => finish({ ok: true });
    const onError = (ev: Event) => {
      const e = ev as ErrorEvent;
      error = { message: e.message, code: (e.error as { code?: string } | undefined)?.code };
    };
    const onClose = () => finish(failed(error, identityError(), what));
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            ws.terminate();
            finish(proxyFailure("timeout", `${what}: no WebSocket handshake within ${timeoutMs} ms`));
          }, timeoutMs)
        : undefined;
    ws.addEventListener("open", onOpen);
    ws.addEventListener("error", onError);
    ws.addEventListener("close", onClose);
  });
}

function failed(error: { message?: string; code?: string } | undefined, identity: Error | undefined, what: string): Handshake {
  const message = error?.message ?? "connection closed during the WebSocket handshake";
  const refused = REFUSED.exec(message);
  if (refused) {
    const status = Number(refused[1]);
    // A 2xx/3xx/1xx answer to an upgrade is still a refusal; anything odd becomes 502.
    const relayed = status >= 200 && status <= 599 ? status : 502;
    const response = new Response(`mesh: ${what} refused the WebSocket upgrade with status ${status}\n`, {
      status: relayed,
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
    return { ok: false, response, status: relayed, failure: "refused" };
  }
  if (identity) return proxyFailure("peer-identity", `${what}: ${identity.message}`);
  return proxyFailure(classifyFetchError(error ?? {}), `${what}: ${message}`);
}

function proxyFailure(failure: ProxyFailure, detail: string): Handshake {
  const response = errorResponse(failure, detail);
  return { ok: false, response, status: response.status, failure };
}
