/**
 * Request/response on persistent connections: C connections, each sending a MESSAGE_BYTES
 * message and waiting for all of its echo before the next, for the warm-up and then the
 * measured window (bounded in time and in count). Every echo is checked byte for byte (the
 * message carries its connection and sequence number). At the end each connection sends
 * its FIN and must see the service's come back through the proxies.
 */
import type { Socket } from "bun";
import { dial } from "./dial.ts";
import { Histogram } from "./histogram.ts";
import { Window } from "./window.ts";
import { ERROR_SAMPLE, MESSAGE_BYTES, type RoundTripResult } from "./wire.ts";

export interface RoundTripOptions {
  port: number;
  connections: number;
  warmupMs: number;
  durationMs: number;
  /** The window closes early past this many round trips. */
  maxRoundTrips: number;
  connectTimeoutMs: number;
  /** After the window: how long in-flight echoes and the service's FIN may take. */
  closeTimeoutMs: number;
}

interface Conn {
  index: number;
  message: Buffer;
  seq: number;
  /** Bytes of the current echo read so far. */
  got: number;
  inFlight: boolean;
  sentAt: number;
  /** Our FIN is sent: the next thing expected is the service's. */
  finishing: boolean;
  closed: boolean;
  /** The service's FIN came back. */
  gotFin: boolean;
  /** An error was counted for it: one per connection, whatever follows from it. */
  failed: boolean;
  /** The message's bytes the socket has not taken yet. */
  unsent: number;
}

export async function roundTrips(o: RoundTripOptions): Promise<RoundTripResult> {
  const hist = new Histogram();
  const window = new Window();
  const errorSample: string[] = [];
  let errors = 0;
  let counted = 0;
  let open = 0;
  let allClosed!: () => void;
  const done = new Promise<void>((resolve) => (allClosed = resolve));

  const error = (c: Conn, text: string) => {
    if (c.failed) return;
    c.failed = true;
    errors++;
    if (errorSample.length < ERROR_SAMPLE) errorSample.push(`connection ${c.index}: ${text}`);
  };
  const closed = (c: Conn) => {
    if (c.closed) return;
    c.closed = true;
    if (--open > 0) return;
    // Nothing left to measure: the window closes now rather than at its time.
    window.close();
    allClosed();
  };
  const finish = (s: Socket<Conn>) => {
    s.data.finishing = true;
    s.shutdown();
  };
  const write = (s: Socket<Conn>) => {
    const c = s.data;
    const n = s.write(c.message.subarray(MESSAGE_BYTES - c.unsent));
    c.unsent -= Math.max(n, 0);
  };
  const send = (s: Socket<Conn>) => {
    const c = s.data;
    c.seq++;
    c.message.writeUInt32LE(c.seq >>> 0, 0);
    c.got = 0;
    c.inFlight = true;
    c.unsent = MESSAGE_BYTES;
    c.sentAt = performance.now();
    write(s);
  };

  const handlers = {
    data(s: Socket<Conn>, chunk: Buffer) {
      const c = s.data;
      if (!c.inFlight || c.got + chunk.byteLength > MESSAGE_BYTES) {
        error(c, `${chunk.byteLength} bytes nobody asked for (${c.got} of an echo read, in flight: ${c.inFlight})`);
        return void s.terminate();
      }
      if (!chunk.equals(c.message.subarray(c.got, c.got + chunk.byteLength))) {
        error(c, `echo of message ${c.seq} differs from what was sent at bytes ${c.got}–${c.got + chunk.byteLength}`);
        return void s.terminate();
      }
      c.got += chunk.byteLength;
      if (c.got < MESSAGE_BYTES) return;
      c.inFlight = false;
      if (window.phase === "measure") {
        hist.record((performance.now() - c.sentAt) * 1000);
        if (++counted >= o.maxRoundTrips) window.close();
      }
      if (window.phase === "stopping") finish(s);
      else send(s);
    },
    drain(s: Socket<Conn>) {
      if (s.data.unsent > 0) write(s);
    },
    end(s: Socket<Conn>) {
      const c = s.data;
      c.gotFin = true;
      if (!c.finishing) error(c, `the other side ended the connection after ${c.seq} messages`);
      else if (c.inFlight) error(c, `the other side ended the connection with message ${c.seq} in flight`);
      s.end();
    },
    close(s: Socket<Conn>, err?: Error) {
      const c = s.data;
      // After our FIN the runtime reports the service's as a close without an error (no `end` event); a reset has one.
      if (c.finishing && err === undefined) c.gotFin = true;
      if (!c.gotFin) error(c, `closed without a FIN${err ? ` (${err.message})` : ""} after ${c.seq} messages`);
      closed(c);
    },
    error(s: Socket<Conn>, err: Error) {
      if (!s.data.closed) error(s.data, err.message);
    },
  };

  const conns: Conn[] = Array.from({ length: o.connections }, (_, index) => {
    const message = Buffer.alloc(MESSAGE_BYTES, 0x61 + (index % 26));
    message.writeUInt32LE(index, 4);
    return { index, message, seq: 0, got: 0, inFlight: false, sentAt: 0, finishing: false, closed: false, gotFin: false, failed: false, unsent: 0 };
  });
  const dialed = await Promise.allSettled(conns.map((c) => dial(o.port, c, handlers, o.connectTimeoutMs, true)));
  const sockets: Socket<Conn>[] = [];
  dialed.forEach((d, i) => {
    if (d.status === "fulfilled") sockets.push(d.value);
    else error(conns[i]!, (d.reason as Error).message);
  });
  open = sockets.length;

  if (sockets.length > 0) {
    const reset = () => {
      hist.reset();
      counted = 0;
    };
    let stop: Timer | undefined;
    const openWindow = () => {
      window.open(reset);
      stop = setTimeout(() => window.close(), o.durationMs);
    };
    const warmup = o.warmupMs > 0 ? setTimeout(openWindow, o.warmupMs) : undefined;
    if (!warmup) openWindow();
    for (const s of sockets) send(s);
    await new Promise<void>((resolve) => {
      // Bounded: once the window closes, every connection finishes or is cut off within closeTimeoutMs.
      const check = setInterval(() => {
        if (window.phase !== "stopping") return;
        clearInterval(check);
        // Connections that were idle when the window closed (none in steady state) finish now.
        for (const s of sockets) if (!s.data.inFlight && !s.data.finishing && !s.data.closed) finish(s);
        const cutOff = setTimeout(() => {
          for (const s of sockets)
            if (!s.data.closed) {
              error(s.data, `no ${s.data.inFlight ? "echo" : "FIN from the service"} within ${o.closeTimeoutMs} ms of the window's end`);
              s.terminate();
              closed(s.data);
            }
        }, o.closeTimeoutMs);
        void done.then(() => {
          clearTimeout(cutOff);
          resolve();
        });
      }, 5);
    });
    clearTimeout(warmup);
    clearTimeout(stop);
  }

  const windowMs = window.phase === "stopping" ? window.elapsedMs : 0;
  return {
    kind: "rr",
    connections: o.connections,
    roundTrips: hist.count,
    windowMs,
    perSecond: windowMs > 0 ? hist.count / (windowMs / 1000) : 0,
    p50Us: hist.percentile(50),
    p99Us: hist.percentile(99),
    maxUs: hist.maxUs,
    cpuMs: window.phase === "stopping" ? window.cpuMs : 0,
    opened: sockets.length,
    errors,
    errorSample,
  };
}
