/**
 * In-process watch fan-out for the embedded store: one writer process, so every change
 * passes through here. Events are queued per watcher and delivered from a microtask, so a
 * handler never runs inside the write that caused it and sees events strictly in order.
 */
import { StoreError } from "./errors.ts";
import type { WatchEvent, WatchHandlers } from "./store.ts";
import { deliver, reportEnd } from "./watch-delivery.ts";

interface Watcher {
  prefix: string;
  minRevision: number;
  handlers: WatchHandlers;
  queue: WatchEvent[];
  scheduled: boolean;
  done: boolean;
}

export class WatchHub {
  private readonly watchers = new Set<Watcher>();

  /** `backlog`: history the watcher asked for, already filtered, oldest first. */
  add(prefix: string, handlers: WatchHandlers, minRevision: number, backlog: WatchEvent[]): () => void {
    const w: Watcher = { prefix, minRevision, handlers, queue: [], scheduled: false, done: false };
    this.watchers.add(w);
    this.enqueue(w, backlog);
    return () => this.end(w);
  }

  /** Events of one committed change, in order. */
  publish(events: WatchEvent[]): void {
    for (const w of this.watchers) this.enqueue(w, events);
  }

  /** Ends every watcher with `err` (the store closed). */
  endAll(err: StoreError): void {
    for (const w of [...this.watchers]) this.end(w, err);
  }

  get size(): number {
    return this.watchers.size;
  }

  private enqueue(w: Watcher, events: WatchEvent[]): void {
    for (const ev of events) if (ev.revision >= w.minRevision && ev.key.startsWith(w.prefix)) w.queue.push(ev);
    if (w.queue.length && !w.scheduled) {
      w.scheduled = true;
      queueMicrotask(() => this.flush(w));
    }
  }

  private flush(w: Watcher): void {
    w.scheduled = false;
    let i = 0;
    while (!w.done && i < w.queue.length) {
      const err = deliver(w.handlers, w.queue[i++]!);
      if (err) this.end(w, err);
    }
    w.queue = w.queue.slice(i);
  }

  private end(w: Watcher, err?: StoreError): void {
    if (w.done) return;
    w.done = true;
    w.queue = [];
    this.watchers.delete(w);
    if (err) reportEnd(w.handlers, err);
  }
}

/** The error a watcher gets when it asks for history before what the store still keeps. */
export function compactedError(fromRevision: number, compactRevision: number): StoreError {
  return new StoreError("compacted", `watch from revision ${fromRevision}: history before ${compactRevision} was compacted; re-list and watch again`, compactRevision);
}
