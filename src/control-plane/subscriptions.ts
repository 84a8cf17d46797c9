/**
 * Config distribution by long poll: a proxy asks with the version it has; the answer
 * comes at once if its snapshot differs, or as soon as a change makes it differ, or
 * after `waitMs` with nothing new. Resuming after a disconnect is the same question, so
 * a proxy that reconnects (to any replica) gets exactly what it missed, or nothing.
 */
import { snapshotFor, type ProxySnapshot, type Subscriber } from "./snapshot.ts";
import type { ControlPlaneView } from "./view.ts";

interface Waiter {
  sub: Subscriber;
  known: string | undefined;
  resolve(s: ProxySnapshot | undefined): void;
}

export class Subscriptions {
  private waiters = new Set<Waiter>();

  constructor(private view: ControlPlaneView, private bundle: () => string) {
    view.onChange(() => this.wake());
  }

  current(sub: Subscriber): ProxySnapshot {
    return snapshotFor(this.view, sub, this.bundle());
  }

  poll(sub: Subscriber, known: string | undefined, waitMs: number, signal?: AbortSignal): Promise<ProxySnapshot | undefined> {
    const now = this.current(sub);
    if (now.version !== known || waitMs <= 0) return Promise.resolve(now.version !== known ? now : undefined);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        sub,
        known,
        resolve: (s) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          signal?.removeEventListener("abort", onAbort);
          resolve(s);
        },
      };
      const onAbort = () => waiter.resolve(undefined);
      const timer = setTimeout(() => waiter.resolve(undefined), waitMs);
      signal?.addEventListener("abort", onAbort);
      this.waiters.add(waiter);
    });
  }

  /** Answers every waiter whose snapshot changed; many proxies share a few distinct views, so cache per view. */
  private wake(): void {
    const cache = new Map<string, ProxySnapshot>();
    for (const w of [...this.waiters]) {
      const key = `${w.sub.namespace}\0${w.sub.service}\0${w.sub.calls?.join(",") ?? "*"}`;
      let snap = cache.get(key);
      if (!snap) cache.set(key, (snap = this.current(w.sub)));
      if (snap.version !== w.known) w.resolve(snap);
    }
  }

  /** Ends every open poll (on shutdown), so proxies reconnect elsewhere at once. */
  closeAll(): void {
    for (const w of [...this.waiters]) w.resolve(undefined);
  }

  get open(): number {
    return this.waiters.size;
  }
}
