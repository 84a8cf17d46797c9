/**
 * How many refusal lines the audit log writes: the bootstrap port is open to anyone, and a
 * flood of bad requests (each costs its sender one TLS handshake) must not fill the disk.
 * Past the budget of a window, refusals are counted, and one line says how many were left
 * out, and from which clients, when the window ends. Counts in /v1/status stay exact.
 */

export interface ThrottleOptions {
  /** Lines written per window before the rest are only counted. */
  linesPerWindow: number;
  windowMs: number;
}

export const REFUSAL_THROTTLE: ThrottleOptions = { linesPerWindow: 60, windowMs: 60_000 };
/** Clients named in the summary of a window's left-out lines; a flood may come from many. */
const NAMED_CLIENTS = 5;

export interface Suppressed {
  count: number;
  since: string;
  /** The clients that were refused most, with their counts, busiest first. */
  clients: Record<string, number>;
}

export class RefusalThrottle {
  private windowStart = Date.now();
  private written = 0;
  private suppressed = 0;
  private readonly byClient = new Map<string, number>();
  private timer: Timer | undefined;

  constructor(
    private readonly report: (s: Suppressed) => void,
    private readonly opts: ThrottleOptions = REFUSAL_THROTTLE,
  ) {}

  /** Whether a refusal from `client` gets its own line; if not, it is counted for the window's summary. */
  admit(client: string | undefined): boolean {
    const now = Date.now();
    if (this.suppressed === 0 && now - this.windowStart >= this.opts.windowMs) {
      this.windowStart = now;
      this.written = 0;
    }
    if (this.written < this.opts.linesPerWindow) {
      this.written++;
      return true;
    }
    this.suppressed++;
    const key = client ?? "unknown";
    // Bounded: a flood from many addresses keeps the first ones seen, and counts the rest in `count` alone.
    if (this.byClient.has(key) || this.byClient.size < 1000) this.byClient.set(key, (this.byClient.get(key) ?? 0) + 1);
    this.timer ??= setTimeout(() => this.endWindow(), Math.max(0, this.windowStart + this.opts.windowMs - now));
    this.timer.unref();
    return false;
  }

  /** Stops the pending summary's timer, writing the summary now (a shutdown). */
  flush(): void {
    if (this.timer !== undefined) this.endWindow();
  }

  private endWindow(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const top = [...this.byClient].sort((a, b) => b[1] - a[1]).slice(0, NAMED_CLIENTS);
    this.report({ count: this.suppressed, since: new Date(this.windowStart).toISOString(), clients: Object.fromEntries(top) });
    this.suppressed = 0;
    this.byClient.clear();
    this.windowStart = Date.now();
    this.written = 0;
  }
}
