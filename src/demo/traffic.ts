/**
 * The load generator: a steady, bounded stream of GET /product/N to `frontend`, sent
 * through loadgen's sidecar like any other client of the mesh. The rate is held by
 * counting what is due since the start, and at most `maxInflight` requests are out at
 * once (beyond that a request is counted as dropped, not queued).
 */
export interface TrafficStats {
  sent: number;
  ok: number;
  failed: number;
  dropped: number;
  /** In flight when the generator stopped, and abandoned. */
  cancelled: number;
  lastError?: string;
}

const TICK_MS = 25;

export class TrafficGenerator {
  readonly stats: TrafficStats = { sent: 0, ok: 0, failed: 0, dropped: 0, cancelled: 0 };
  private timer?: Timer;
  private inflight = new Set<Promise<void>>();
  private abort = new AbortController();

  constructor(
    private readonly outboundPort: number,
    private readonly host: string,
    private readonly ratePerSec: number,
    private readonly maxInflight = 64,
  ) {}

  start(): void {
    const started = performance.now();
    let issued = 0;
    this.timer = setInterval(() => {
      const due = Math.floor(((performance.now() - started) * this.ratePerSec) / 1000) - issued;
      for (let i = 0; i < due; i++, issued++) {
        if (this.inflight.size >= this.maxInflight) this.stats.dropped++;
        else this.send(issued);
      }
    }, TICK_MS);
  }

  private send(n: number): void {
    this.stats.sent++;
    const p = fetch(`http://127.0.0.1:${this.outboundPort}/product/${n % 1000}`, {
      headers: { host: this.host },
      signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(5000)]),
    })
      .then(async (res) => {
        await res.arrayBuffer();
        if (res.ok) this.stats.ok++;
        else this.fail(`${res.status} ${res.headers.get("x-mesh-error") ?? ""}`.trim());
      })
      .catch((err: Error) => {
        if (this.abort.signal.aborted) this.stats.cancelled++;
        else this.fail(err.message);
      })
      .finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  private fail(why: string): void {
    this.stats.failed++;
    this.stats.lastError = why;
  }

  /** Stops sending and abandons requests in flight. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.abort.abort();
    await Promise.allSettled([...this.inflight]);
  }
}
