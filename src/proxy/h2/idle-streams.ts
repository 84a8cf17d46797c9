/**
 * HTTP/2 streams that carry nothing either way for the idle timeout are reset, as Envoy's
 * stream_idle_timeout (5 minutes by default) does: otherwise a peer could hold each of its
 * connections' 100 streams open for ever, and the service's with them. One sweep for all
 * streams, every half timeout, so a stream ends between one and one and a half timeouts
 * idle; each byte relayed marks its stream active. (Bun's `Http2Stream.setTimeout` does not
 * restart on incoming data, measured, so it cannot tell an idle stream from a busy one.)
 */
export interface WatchedStream {
  /** performance.now() of its last byte, either way. */
  lastActive: number;
  idle(): void;
}

export class IdleStreams {
  private readonly live = new Set<WatchedStream>();
  private sweeper: Timer | undefined;

  /** `timeoutMs` 0: streams never time out. */
  constructor(readonly timeoutMs: number) {}

  /** Starts watching; `idle` runs once if the stream stays silent too long. */
  watch(idle: () => void): WatchedStream | undefined {
    if (this.timeoutMs <= 0) return undefined;
    const w: WatchedStream = { lastActive: performance.now(), idle };
    this.live.add(w);
    if (this.sweeper === undefined) {
      this.sweeper = setInterval(() => this.sweep(), Math.max(1, this.timeoutMs / 2));
      this.sweeper.unref();
    }
    return w;
  }

  unwatch(w: WatchedStream | undefined): void {
    if (w === undefined) return;
    this.live.delete(w);
    if (this.live.size === 0 && this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  private sweep(): void {
    const now = performance.now();
    for (const w of [...this.live]) {
      if (now - w.lastActive < this.timeoutMs) continue;
      this.unwatch(w);
      w.idle();
    }
  }
}
