/**
 * The defence Envoy uses against HTTP/2's "rapid reset" (CVE-2023-44487), for mux
 * streams and for the streams of HTTP/2 sessions (../../h2/wire/server-session.ts). Each stream a client ends while its request is in flight cancels work the
 * service had started, and costs the client almost nothing; the stream limit bounds
 * how many run at once, not how fast they churn. A client that ends most of its streams
 * that way, right after opening them, is cut off: once a session has opened
 * MIN_STREAMS, at most half of them may be ended busy within EARLY_MS of opening.
 * Mesh's own client keeps streams for many requests and replaces only those it lost, so
 * it comes near only when most of its requests time out or are cancelled within a second
 * of a fresh stream (Envoy's defaults, with the same trade-off).
 */
const EARLY_MS = 1000;
const MIN_STREAMS = 500;

export class ChurnGuard {
  private opened = 0;
  private early = 0;

  streamOpened(): void {
    this.opened++;
  }

  /** The peer ended a stream `ageMs` after opening it, with a request in flight; true when the session must end. */
  endedBusy(ageMs: number): boolean {
    if (ageMs < EARLY_MS) this.early++;
    return this.opened >= MIN_STREAMS && this.early * 2 >= this.opened;
  }
}
