/**
 * A WebSocket service for tests. It greets each client first (so a proxy must hold
 * what the service says before the client side is open), echoes messages, and obeys
 * commands: "close:CODE:REASON", "flood:COUNT:BYTES" (sends that much, respecting
 * backpressure), "pause:MS" (stops reading for a while), "count" (how many bytes and
 * whether binary messages arrived in order, by their first 4 bytes).
 */
import type { ServerWebSocket } from "bun";

export interface SeenClose {
  path: string;
  code: number;
  reason: string;
}

interface Conn {
  caller: string | null;
  path: string;
  protocol: string | null;
  received: number;
  nextIndex: number;
  ordered: boolean;
  flood?: { left: number; size: number; index: number };
}

export interface WsService {
  server: ReturnType<typeof Bun.serve<Conn>>;
  url: string;
  upgrades: number;
  closes: SeenClose[];
  stop(): void;
}

export function wsService(): WsService {
  const svc: WsService = { server: undefined as never, url: "", upgrades: 0, closes: [], stop: () => svc.server.stop(true) };
  svc.server = Bun.serve<Conn>({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req, server) {
      const url = new URL(req.url);
      if (url.pathname === "/deny") return new Response("forbidden", { status: 403 });
      if (url.pathname === "/missing") return new Response("no such socket", { status: 404 });
      const offered = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
      // Picks the last offer, so a proxy that picked the first on its own would show.
      const protocol = offered.at(-1) ?? null;
      const data: Conn = { caller: req.headers.get("x-mesh-client-id"), path: url.pathname, protocol, received: 0, nextIndex: 0, ordered: true };
      if (server.upgrade(req, { data, headers: protocol ? { "sec-websocket-protocol": protocol } : {} })) {
        svc.upgrades++;
        return undefined;
      }
      return new Response("not a websocket", { status: 400 });
    },
    websocket: {
      maxPayloadLength: 64 << 20,
      open(ws) {
        ws.send(JSON.stringify({ hello: true, caller: ws.data.caller, path: ws.data.path, protocol: ws.data.protocol }));
      },
      message(ws, m) {
        if (typeof m !== "string") return onBinary(ws, m);
        if (m.startsWith("close:")) {
          const [, code, reason] = m.split(":");
          return ws.close(Number(code), reason);
        }
        if (m.startsWith("flood:")) {
          const [, count, size] = m.split(":");
          ws.data.flood = { left: Number(count), size: Number(size), index: 0 };
          return flood(ws);
        }
        if (m.startsWith("pause:")) {
          ws.pause();
          setTimeout(() => ws.resume(), Number(m.slice(6)));
          return;
        }
        if (m === "count") return void ws.send(JSON.stringify({ received: ws.data.received, ordered: ws.data.ordered }));
        ws.send(m);
      },
      drain: (ws) => flood(ws),
      close(ws, code, reason) {
        svc.closes.push({ path: ws.data.path, code, reason });
      },
    },
  });
  svc.url = `http://127.0.0.1:${svc.server.port}`;
  return svc;
}

function onBinary(ws: ServerWebSocket<Conn>, m: Buffer) {
  // Binary messages under /count are counted, not echoed; the first 4 bytes number them.
  if (ws.data.path !== "/count") return void ws.send(m);
  ws.data.received += m.byteLength;
  if (m.readUInt32BE(0) !== ws.data.nextIndex++) ws.data.ordered = false;
}

/** Sends the flood, numbered, until done or backpressured (then `drain` continues it). */
function flood(ws: ServerWebSocket<Conn>) {
  const f = ws.data.flood;
  while (f && f.left > 0) {
    const chunk = Buffer.alloc(f.size, f.index & 0xff);
    chunk.writeUInt32BE(f.index++, 0);
    f.left--;
    if (ws.send(chunk) === -1) return;
  }
}
