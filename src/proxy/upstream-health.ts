/**
 * Health of the local service, as the sidecar reports it to the control plane. With a
 * health path it is checked actively before each heartbeat. Without one it is judged
 * passively from traffic: consecutive failures (5xx or unreachable) mark it unhealthy,
 * and since an instance that is not offered gets no traffic to recover by, a probe of
 * the service readmits it once it answers again.
 */
export const PASSIVE_FAILURE_THRESHOLD = 5;

export class UpstreamHealth {
  private failuresInRow = 0;

  constructor(private upstream: URL, private healthPath?: string) {}

  /** Each inbound request's outcome; `ok` is false for 5xx or an unreachable service. */
  onResult(ok: boolean): void {
    this.failuresInRow = ok ? 0 : this.failuresInRow + 1;
  }

  get passivelyHealthy(): boolean {
    return this.failuresInRow < PASSIVE_FAILURE_THRESHOLD;
  }

  async check(): Promise<boolean> {
    if (this.healthPath) return (await probe(new URL(this.healthPath, this.upstream))) < 400;
    if (this.passivelyHealthy) return true;
    if ((await probe(this.upstream)) < 500) this.failuresInRow = 0;
    return this.passivelyHealthy;
  }
}

/** The status the service answers with, or 599 when it cannot be reached in time. */
async function probe(url: URL): Promise<number> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000), redirect: "manual" });
    await res.body?.cancel();
    return res.status;
  } catch {
    return 599;
  }
}
