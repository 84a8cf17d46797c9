/**
 * A raw client connection a test scripts by hand (plain TCP to a local listener, or TLS with
 * any credentials to a sidecar's inbound), and all it saw: bytes, the other side's FIN, the
 * close and its error. Unlike tcpExchange (tcp.ts) it stays open between steps, so a test can
 * write, wait for an answer, break the protocol, and watch how the other side ends.
 */
import type { Socket } from "bun";
import type { ClientTls } from "./raw-http.ts";
import { eventually } from "./wait.ts";

export interface RawPeerOptions {
  /** TLS with these credentials (a mesh certificate, none, or another CA's); plain TCP without. */
  tls?: Partial<ClientTls>;
  /** ALPN protocols offered on TLS, in wire format; none when absent. */
  alpn?: Buffer;
  /**
   * How long writeAll and flood wait after a write the socket did not take whole before they
   * try again; the socket's drain (or any other event) ends the wait sooner. Default 20 ms.
   */
  writeRetryMs?: number;
  /**
   * Whether this side stays open after the other side's FIN (its TLS close), for the test to
   * end or go on writing; default true. False closes this side with it, as a node:tls client
   * does: the other side's FIN is then a close (`closed`, `closedAt`).
   */
  halfOpen?: boolean;
}

export class RawPeer {
  sock!: Socket<RawPeer>;
  readonly chunks: Buffer[] = [];
  /** The other side's FIN (its TLS close), with this side still open. */
  ended = false;
  closed = false;
  /** When `closed` became true (Date.now()). */
  closedAt: number | undefined;
  error: string | undefined;
  /** Bytes read so far, whether kept or only counted. */
  received = 0;
  handshakeOk: boolean | undefined;
  alpn: string | false | null = null;
  private keep = true;
  private wake: (() => void)[] = [];

  constructor(private readonly writeRetryMs = 20) {}

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
  get text(): string {
    return this.bytes.toString("latin1");
  }
  /** Counts what arrives instead of keeping it (bulk transfers). */
  countOnly(): this {
    this.keep = false;
    return this;
  }
  onData(chunk: Buffer): void {
    this.received += chunk.byteLength;
    if (this.keep) this.chunks.push(Buffer.from(chunk));
    this.notify();
  }
  /** Wakes the writers waiting for the socket to change (data, drain, FIN, close). */
  notify(): void {
    for (const w of this.wake.splice(0)) w();
  }
  private changed(ms: number): Promise<void> {
    return Promise.race([new Promise<void>((r) => this.wake.push(r)), Bun.sleep(ms)]);
  }
  write(data: string | Uint8Array): number {
    return this.closed ? -1 : this.sock.write(data);
  }
  /** Writes `data` whole unless the connection closes or `ms` passes; the bytes the socket took. */
  async writeAll(data: Uint8Array, ms = 10_000): Promise<number> {
    const until = Date.now() + ms;
    let off = 0;
    while (off < data.byteLength && !this.closed && Date.now() < until) {
      const n = this.sock.write(data.subarray(off));
      if (n > 0) off += n;
      if (off < data.byteLength) await this.changed(this.writeRetryMs);
    }
    return off;
  }
  /** Writes `block` over and over for `ms` (at most `max` bytes), as fast as the socket takes it; the bytes it took. */
  async flood(block: Uint8Array, ms: number, max = 256 * 1024 * 1024): Promise<number> {
    const until = Date.now() + ms;
    let total = 0;
    let off = 0;
    while (!this.closed && Date.now() < until && total < max) {
      const n = this.sock.write(block.subarray(off));
      if (n > 0) {
        total += n;
        off = (off + n) % block.byteLength;
      } else await this.changed(this.writeRetryMs);
    }
    return total;
  }
  until(check: (p: RawPeer) => boolean, ms: number): Promise<boolean> {
    return eventually(() => check(this), ms, 10);
  }
  /** This side's FIN, after `last` if given (a protocol's own end, such as mesh-tcp/1's END frame). */
  end(last?: Uint8Array): void {
    if (this.closed) return;
    if (last !== undefined) this.sock.write(last);
    this.sock.shutdown();
  }
  terminate(): void {
    if (!this.closed) this.sock.terminate();
  }
}

/** Connects and, on TLS, waits for the handshake (or the close), at most 5 s; a failed connect is a closed peer with its error. */
export async function connectRawPeer(port: number, opts: RawPeerOptions = {}): Promise<RawPeer> {
  const p = new RawPeer(opts.writeRetryMs);
  let ready!: () => void;
  const readyP = new Promise<void>((r) => (ready = r));
  const tls = opts.tls;
  try {
    p.sock = await Bun.connect<RawPeer>({
      hostname: "127.0.0.1",
      port,
      data: p,
      allowHalfOpen: opts.halfOpen ?? true,
      socket: {
        open: () => void (tls === undefined && ready()),
        handshake(s, ok) {
          p.handshakeOk = ok;
          p.alpn = s.alpnProtocol;
          ready();
        },
        data: (_s, chunk) => p.onData(chunk),
        drain: () => p.notify(),
        end: () => {
          p.ended = true;
          p.notify();
        },
        close: (_s, err) => {
          if (err) p.error ??= err.message;
          p.closed = true;
          p.closedAt ??= Date.now();
          ready();
          p.notify();
        },
        error: (_s, err) => void (p.error ??= err.message),
        connectError: (_s, err) => {
          p.error ??= err.message;
          p.closed = true;
          p.closedAt ??= Date.now();
          ready();
        },
      },
      ...(tls !== undefined ? { tls: { ...tls, rejectUnauthorized: false, ...(opts.alpn !== undefined ? { ALPNProtocols: opts.alpn } : {}) } } : {}),
    });
  } catch (err) {
    p.error = (err as Error).message;
    p.closed = true;
    p.closedAt = Date.now();
    return p;
  }
  await Promise.race([readyP, Bun.sleep(5000)]);
  return p;
}
