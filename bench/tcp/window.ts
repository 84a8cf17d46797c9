/**
 * The load client's measured window: its edges are printed (wire.ts) as they happen, so
 * the runner reads the proxies' CPU exactly there, and timed here for the client's rates.
 * Before it, the warm-up; after it, the client stops sending and closes its connections.
 */
import { WINDOW_END, WINDOW_START } from "./wire.ts";

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

export type Phase = "warmup" | "measure" | "stopping";

export class Window {
  phase: Phase = "warmup";
  startedAt = 0;
  endedAt = 0;
  /** The client's own CPU time (user + system, µs) at the window's edges: it may exit before the runner reads its /proc. */
  private cpuAtStartUs = 0;
  private cpuAtEndUs = 0;

  /** Opens the window (from the warm-up, or at once); `reset` clears what the warm-up counted. */
  open(reset: () => void): void {
    if (this.phase !== "warmup") return;
    reset();
    this.phase = "measure";
    this.startedAt = performance.now();
    this.cpuAtStartUs = cpuUs();
    console.log(WINDOW_START);
  }

  /** Closes it: the duration is over, a count bound was reached, or nothing is left to measure. */
  close(): void {
    if (this.phase === "stopping") return;
    if (this.phase === "warmup") this.open(() => undefined);
    this.phase = "stopping";
    this.endedAt = performance.now();
    this.cpuAtEndUs = cpuUs();
    console.log(WINDOW_END);
  }

  /** CPU milliseconds this process used in the window (once closed). */
  get cpuMs(): number {
    return (this.cpuAtEndUs - this.cpuAtStartUs) / 1000;
  }

  /** Milliseconds the window has been open (so far, or in all once closed). */
  get elapsedMs(): number {
    return (this.phase === "stopping" ? this.endedAt : performance.now()) - this.startedAt;
  }
}
