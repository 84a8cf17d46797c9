/**
 * Raw HTTP/1 over TCP or TLS for tests that must send bytes no well-behaved client
 * would: every byte is written as given, and whatever comes back is collected until
 * the peer closes, goes quiet, or a deadline passes.
 */
import type { Socket } from "bun";

export interface ClientTls {
  cert: string;
  key: string;
  ca: string;
}

export interface RawResult {
  /** Everything received, as latin1 text (one char per byte). */
  text: string;
  /** True if the peer closed (or reset) the connection before we gave up waiting. */
  closed: boolean;
  /** Status codes of every status line received, in order (see statusesOf). */
  statuses: number[];
  /** Set when the connection could not be opened, or failed with an error rather than a close. */
  error?: string;
}

export interface RawOptions {
  port: number;
  /** Client certificate for an mTLS listener; the server's own certificate is not checked. */
  tls?: ClientTls;
  /** Resolve once this long has passed with no new bytes after the first one (default 400 ms). */
  quietMs?: number;
  /** Resolve no later than this (default 5 s). */
  timeoutMs?: number;
  /** More bytes written `afterMs` after `bytes`, unless the peer has closed by then. */
  thenWrite?: { afterMs: number; bytes: string | Uint8Array };
}

type State = { chunks: Buffer[] };

const bytesOf = (b: string | Uint8Array) => (typeof b === "string" ? Buffer.from(b, "latin1") : b);

/** Sends `bytes` on a fresh connection and collects the reply. */
export async function rawExchange(bytes: string | Uint8Array, opts: RawOptions): Promise<RawResult> {
  const state: State = { chunks: [] };
  const quietMs = opts.quietMs ?? 400;
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  let lastData = 0;
  let closed = false;
  let error: string | undefined;
  let sock: Socket<State> | undefined;
  let opened!: () => void;
  const openedP = new Promise<void>((r) => (opened = r));
  const handlers = {
    open() {
      if (!opts.tls) opened();
    },
    // The server's certificate is not checked (rejectUnauthorized: false): these tests talk
    // to their own proxies on loopback, and the server's checks are what is under test.
    handshake() {
      opened();
    },
    data(_s: Socket<State>, chunk: Buffer) {
      state.chunks.push(Buffer.from(chunk));
      lastData = Date.now();
    },
    close() {
      closed = true;
      opened();
    },
    error(_s: Socket<State>, err: Error) {
      error ??= err.message;
      closed = true;
      opened();
    },
    connectError(_s: Socket<State>, err: Error) {
      error = err.message;
      closed = true;
      opened();
    },
  };
  try {
    sock = await Bun.connect<State>({
      hostname: "127.0.0.1",
      port: opts.port,
      data: state,
      socket: handlers,
      ...(opts.tls ? { tls: { cert: opts.tls.cert, key: opts.tls.key, ca: opts.tls.ca, rejectUnauthorized: false } } : {}),
    });
  } catch (err) {
    return { text: "", closed: true, statuses: [], error: (err as Error).message };
  }
  await Promise.race([openedP, Bun.sleep(Math.max(0, deadline - Date.now()))]);
  if (!closed) {
    const isClosed = () => closed;
    await writeFully(sock, bytesOf(bytes), deadline, isClosed);
    if (opts.thenWrite) {
      await Bun.sleep(opts.thenWrite.afterMs);
      if (!closed) await writeFully(sock, bytesOf(opts.thenWrite.bytes), deadline, isClosed);
    }
  }
  while (!closed && Date.now() < deadline) {
    if (lastData && Date.now() - lastData >= quietMs) break;
    await Bun.sleep(10);
  }
  const peerClosed = closed;
  if (!closed) sock.end();
  const text = Buffer.concat(state.chunks).toString("latin1");
  return { text, closed: peerClosed, statuses: statusesOf(text), ...(error ? { error } : {}) };
}

/** Writes all of `data` unless the peer closes first (a refusal often comes mid-write). */
async function writeFully(sock: Socket<State>, data: Uint8Array, deadline: number, isClosed: () => boolean): Promise<void> {
  let rest = data;
  while (rest.byteLength > 0 && Date.now() < deadline && !isClosed()) {
    const n = sock.write(rest);
    if (n < 0) return;
    rest = rest.subarray(n);
    if (rest.byteLength > 0) await Bun.sleep(1);
  }
}

/** Status codes of every status line received (pipelined responses included; a body that contains one would count too). */
export function statusesOf(text: string): number[] {
  const out: number[] = [];
  const re = /HTTP\/1\.[01] (\d{3}) [^\r\n]*\r\n/g;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(Number(m[1]));
  return out;
}

export interface RawListener {
  port: number;
  tls?: ClientTls;
}

/** One raw exchange with a proxy listener, with the waits the framing and limit tests use. */
export function exchangeWith(listener: RawListener, bytes: string, extra: Partial<RawOptions> = {}): Promise<RawResult> {
  return rawExchange(bytes, { port: listener.port, ...(listener.tls ? { tls: listener.tls } : {}), quietMs: 500, timeoutMs: 5000, ...extra });
}
