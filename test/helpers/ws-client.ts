/**
 * A WebSocket client for tests that turns events into awaitable values: the next
 * message, the close event, or the failure of the handshake, each with a deadline.
 */
import type { WebSocket as BunWebSocket, WebSocketOptions } from "bun";

const BunWS = WebSocket as unknown as new (url: string, options?: WebSocketOptions) => BunWebSocket;
export type Message = string | Buffer;

export class WsClient {
  readonly ws: BunWebSocket;
  readonly opened: Promise<boolean>;
  readonly closed: Promise<{ code: number; reason: string }>;
  error?: string;
  private inbox: Message[] = [];
  private waiting?: (m: Message) => void;

  constructor(url: string, options: WebSocketOptions = {}) {
    this.ws = new BunWS(url, options);
    this.ws.binaryType = "nodebuffer";
    this.opened = new Promise((resolve) => {
      this.ws.addEventListener("open", () => resolve(true));
      this.ws.addEventListener("close", () => resolve(false));
    });
    this.closed = new Promise((resolve) => this.ws.addEventListener("close", (e) => resolve({ code: e.code, reason: e.reason })));
    this.ws.addEventListener("error", (e) => (this.error = (e as ErrorEvent).message));
    this.ws.addEventListener("message", (e) => {
      const m = e.data as Message;
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w(m);
      } else this.inbox.push(m);
    });
  }

  /** The next message, or a rejection after `ms`. */
  next(ms = 5000): Promise<Message> {
    const queued = this.inbox.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return within(new Promise<Message>((resolve) => (this.waiting = resolve)), ms, "message");
  }

  async json<T = Record<string, unknown>>(ms = 5000): Promise<T> {
    return JSON.parse(String(await this.next(ms))) as T;
  }

  closedWithin(ms = 5000) {
    return within(this.closed, ms, "close");
  }
}

export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Sends a WebSocket upgrade request by hand and returns the status line and headers of the answer. */
export async function rawUpgrade(port: number, path: string, host: string, extra: Record<string, string> = {}): Promise<{ status: number; head: string }> {
  let text = "";
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const sock = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, chunk) {
        text += chunk.toString("latin1");
        if (text.includes("\r\n\r\n")) done();
      },
      close: () => done(),
      error: () => done(),
    },
  });
  const lines = [`GET ${path} HTTP/1.1`, `Host: ${host}`, "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"];
  for (const [k, v] of Object.entries(extra)) lines.push(`${k}: ${v}`);
  sock.write(lines.join("\r\n") + "\r\n\r\n");
  await within(finished, 10_000, "upgrade answer").finally(() => sock.end());
  const head = text.split("\r\n\r\n")[0] ?? "";
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head };
}
