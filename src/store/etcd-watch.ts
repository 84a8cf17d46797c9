/**
 * One etcd watch over the gateway's streaming POST /v3/watch (newline-delimited JSON).
 * It remembers the next revision it owes the caller; when the stream breaks (member
 * killed, member lost its leader, cancelled by the server) it reopens on the next member
 * from that revision, so the caller sees every event once, in order, across failovers.
 */
import type { Logger } from "../core/log.ts";
import { errorMessage } from "../core/errors.ts";
import type { StoreError } from "./errors.ts";
import type { EtcdClient } from "./etcd-client.ts";
import { int, prefixRange, toKeyValue, unb64, type RawEvent, type RawHeader } from "./etcd-codec.ts";
import type { WatchEvent, WatchHandlers } from "./store.ts";
import { compactedError } from "./watch-hub.ts";
import { deliver, reportEnd } from "./watch-delivery.ts";

/** A stream that lived this long was healthy; its end is news, not a pattern. */
const STREAM_SETTLED_MS = 2_000;

interface WatchResult {
  header?: RawHeader;
  created?: boolean;
  canceled?: boolean;
  cancel_reason?: string;
  compact_revision?: string;
  events?: RawEvent[];
}

interface StreamMessage {
  result?: WatchResult;
  error?: { message?: string };
}

export class EtcdWatch {
  private readonly abort = new AbortController();
  /** The first revision not yet delivered; undefined until the first stream says where "now" is. */
  private next: number | undefined;
  /** Consecutive streams that ended young: drives the back-off. */
  private failures = 0;
  private done = false;
  /** A stream ended and no new one has been created yet (WatchHandlers.onInterrupted was said). */
  private interrupted = false;

  constructor(
    private readonly client: EtcdClient,
    private readonly prefix: string,
    private readonly handlers: WatchHandlers,
    fromRevision: number | undefined,
    private readonly onDone: (w: EtcdWatch) => void,
    private readonly log?: Logger,
  ) {
    this.next = fromRevision === undefined ? undefined : Math.max(1, Math.floor(fromRevision));
    void this.run();
  }

  cancel(): void {
    if (this.done) return;
    this.done = true;
    this.abort.abort();
    this.onDone(this);
  }

  /** Ends the watch and tells the caller why. */
  end(err: StoreError): void {
    if (this.done) return;
    this.cancel();
    reportEnd(this.handlers, err);
  }

  private async run(): Promise<void> {
    while (!this.done) {
      const endpoint = this.client.currentEndpoint();
      // One controller per stream: the watch's own (cancel) or a failed probe ends it.
      const stream = new AbortController();
      const onCancel = () => stream.abort();
      this.abort.signal.addEventListener("abort", onCancel, { once: true });
      let unhealthy: string | undefined;
      const probe = this.probeWhileOpen(endpoint, (why) => {
        unhealthy = why;
        stream.abort();
      });
      const openedAt = performance.now();
      let reason: string;
      try {
        const res = await this.client.openStream(endpoint, "/v3/watch", this.request(), stream.signal);
        reason = await this.consume(res);
      } catch (err) {
        reason = unhealthy ?? errorMessage(err);
      } finally {
        clearInterval(probe);
        this.abort.signal.removeEventListener("abort", onCancel);
        stream.abort(); // nothing of this stream outlives it
      }
      if (this.done) return;
      this.log?.warn({ endpoint, prefix: this.prefix, resumeFrom: this.next, reason }, "etcd: watch stream ended, reopening");
      if (!this.interrupted) {
        this.interrupted = true;
        this.handlers.onInterrupted?.(reason);
      }
      this.client.moveOn(endpoint, reason);
      // Reopen at once after a stream that served a while; back off while streams keep dying
      // young (no member can serve: no leader anywhere, or all down).
      if (performance.now() - openedAt > STREAM_SETTLED_MS) this.failures = 0;
      if (this.failures++ > 0) await Bun.sleep(Math.min(1_000, 50 * 2 ** this.failures));
    }
  }

  /** Checks the member every `watchProbeMs`, one check at a time; calls `fail` once it is unfit. */
  private probeWhileOpen(endpoint: string, fail: (why: string) => void): ReturnType<typeof setInterval> {
    let inFlight = false;
    return setInterval(() => {
      if (inFlight) return;
      inFlight = true;
      void this.client.probe(endpoint).then((why) => {
        inFlight = false;
        if (why !== undefined) fail(why);
      });
    }, this.client.watchProbeMs);
  }

  private request(): unknown {
    return {
      create_request: {
        ...prefixRange(this.prefix),
        ...(this.next === undefined ? {} : { start_revision: String(this.next) }),
        // The member then reports progress while quiet, so `next` keeps up and a resume after
        // a long quiet spell does not start from a revision that has since been compacted.
        progress_notify: true,
      },
    };
  }

  /** Reads the stream until it ends; returns why, for the log. */
  private async consume(res: Response): Promise<string> {
    if (!res.body) return "response without a body";
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const floor = this.next ?? 0;
    let buf = "";
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return "stream closed by the member";
        buf += decoder.decode(value, { stream: true });
        for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const stop = this.handle(JSON.parse(line) as StreamMessage, floor);
          if (stop !== undefined) return stop;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  /** Returns a reason to stop reading this stream, or undefined to carry on. */
  private handle(msg: StreamMessage, floor: number): string | undefined {
    if (this.done) return "cancelled"; // the reader may still hand over what was buffered before the abort
    if (msg.error) return `stream error: ${msg.error.message ?? "unknown"}`;
    const r = msg.result;
    if (!r) return undefined;
    const compactRevision = int(r.compact_revision);
    if (compactRevision > 0) {
      this.end(compactedError(this.next ?? floor, compactRevision));
      return "compacted";
    }
    if (r.canceled) return `cancelled by the member: ${r.cancel_reason ?? "no reason given"}`;
    if (r.created) {
      this.next ??= int(r.header?.revision) + 1; // a watch "from now" starts after the member's current revision
      this.interrupted = false;
      return undefined;
    }
    if (!r.events?.length) {
      // Progress notification: every event up to header.revision has been sent.
      if (this.next !== undefined) this.next = Math.max(this.next, int(r.header?.revision) + 1);
      return undefined;
    }
    for (const raw of r.events) {
      if (this.done) return "cancelled"; // by the handler
      const ev = toEvent(raw);
      if (ev.revision < floor) continue; // already delivered before a reconnect
      const err = deliver(this.handlers, ev);
      if (err) {
        this.end(err);
        return "handler failed";
      }
      this.next = ev.revision + 1;
    }
    return undefined;
  }
}

function toEvent(raw: RawEvent): WatchEvent {
  const revision = int(raw.kv.mod_revision);
  if (raw.type === "DELETE") return { type: "delete", key: unb64(raw.kv.key), revision };
  const kv = toKeyValue(raw.kv);
  return { type: "put", key: kv.key, value: kv.value, revision, kv };
}
