/**
 * Idle timeouts on the listener side. Bun arms a socket's timeout once and does not re-arm
 * it on a read, so each firing must look back over its period: a keep-alive conversation
 * is never cut between two requests, a silent connection closes after one to two periods,
 * a head trickled in byte by byte (slowloris) is answered 408, and a reader that takes
 * nothing is dropped. The first part drives ServerConnection and MuxSession through a
 * fake socket and fires their timers by hand (the rules are in idle-watch.ts); the last test runs the real listener on
 * loopback with Bun's own timer.
 */
import { describe, expect, test } from "bun:test";
import type { ByteSocket } from "../../../src/proxy/transport/byte-socket.ts";
import { ServerConnection, type ConnectionHandler } from "../../../src/proxy/transport/h1-server/connection.ts";
import { H1Listener } from "../../../src/proxy/transport/h1-server/listener.ts";
import type { Responder } from "../../../src/proxy/transport/h1-server/responder.ts";
import { MuxSession } from "../../../src/proxy/transport/mux/session.ts";

const IDLE_S = 7;
const GET = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

class FakeSocket implements ByteSocket {
  written = "";
  /** Bytes the next writes take; Infinity: all. */
  room = Infinity;
  ended = false;
  reset = false;
  armed: number[] = [];
  readyState = 1;
  write(data: string | Uint8Array, byteOffset = 0, byteLength?: number): number {
    if (this.ended || this.reset) return -1;
    const bytes = typeof data === "string" ? Buffer.from(data, "latin1") : Buffer.from(data.subarray(byteOffset, byteOffset + (byteLength ?? data.byteLength - byteOffset)));
    const n = Math.min(bytes.byteLength, this.room);
    this.room -= n;
    this.written += bytes.subarray(0, n).toString("latin1");
    return n;
  }
  pause(): void {}
  resume(): void {}
  end(): void {
    this.ended = true;
  }
  terminate(): void {
    this.reset = true;
  }
  timeout(seconds: number): void {
    this.armed.push(seconds);
  }
}

interface Served {
  handler: ConnectionHandler;
  refused: string[];
  /** Responders of requests not answered yet (hold: true). */
  waiting: Responder[];
}

function service(hold = false): Served {
  const served: Served = { refused: [], waiting: [], handler: undefined as unknown as ConnectionHandler };
  served.handler = {
    request: (_req, res) => (hold ? served.waiting.push(res) : res.respond(200, { "content-type": "text/plain" }, "ok")),
    refused: (reason) => served.refused.push(reason),
    upgrade: () => {},
  };
  return served;
}

function connection(hold = false) {
  const socket = new FakeSocket();
  const served = service(hold);
  const conn = new ServerConnection(socket, served.handler, { maxBodyBytes: 1 << 20, idleTimeoutS: IDLE_S }, () => {});
  conn.ready = true;
  const send = (text: string) => conn.onData(Buffer.from(text, "latin1"));
  const responses = () => socket.written.split("HTTP/1.1 ").length - 1;
  return { socket, conn, served, send, responses };
}

describe("an HTTP/1.1 connection at its idle timer", () => {
  test("a keep-alive conversation with a request in every period is never cut, and the timer is re-armed each time", async () => {
    const { socket, conn, send, responses } = connection();
    for (let i = 0; i < 5; i++) {
      send(GET);
      await nextTurn();
      conn.onTimeout();
      expect(socket.ended || socket.reset).toBe(false);
    }
    expect(responses()).toBe(5);
    expect(socket.armed).toEqual([IDLE_S, IDLE_S, IDLE_S, IDLE_S, IDLE_S]);
  });

  test("a connection silent for a whole period closes gracefully at the next firing", async () => {
    const { socket, conn, send } = connection();
    send(GET);
    await nextTurn();
    conn.onTimeout();
    expect(socket.ended).toBe(false);
    conn.onTimeout();
    expect(socket.ended).toBe(true);
    expect(socket.reset).toBe(false);
  });

  test("a request in flight is never timed out here, and its response finishing counts as use", async () => {
    const { socket, conn, served, send, responses } = connection(true);
    send(GET);
    conn.onTimeout();
    conn.onTimeout();
    conn.onTimeout();
    expect(socket.ended || socket.reset).toBe(false);
    served.waiting.shift()!.respond(200, {}, "late");
    await nextTurn();
    expect(responses()).toBe(1);
    conn.onTimeout();
    expect(socket.ended).toBe(false);
    conn.onTimeout();
    expect(socket.ended).toBe(true);
  });

  test("a head still incomplete at two firings in a row is answered 408 and the connection ends, however many bytes trickled in", async () => {
    const { socket, conn, served, send } = connection();
    send("GET / HTTP/1.1\r\nHo");
    conn.onTimeout();
    send("s");
    expect(socket.written).toBe("");
    conn.onTimeout();
    send("t");
    await nextTurn();
    expect(socket.written).toStartWith("HTTP/1.1 408 ");
    expect(socket.written).toContain("x-mesh-error: request-timeout");
    expect(socket.ended).toBe(true);
    expect(served.refused).toEqual(["head-timeout"]);
  });

  test("a head completed between firings is served, and the next partial head gets two periods of its own", async () => {
    const { socket, conn, send, responses } = connection();
    send("GET / HTTP/1.1\r\nHo");
    conn.onTimeout();
    send("st: a\r\n\r\nGET / HTTP/1.1\r\nHo");
    await nextTurn();
    expect(responses()).toBe(1);
    conn.onTimeout();
    expect(socket.ended).toBe(false);
    conn.onTimeout();
    await nextTurn();
    expect(responses()).toBe(2);
    expect(socket.written).toContain("HTTP/1.1 408 ");
    expect(socket.ended).toBe(true);
  });

  test("a reader that takes nothing of a response for a whole period is reset; one that takes some is kept", async () => {
    const stalled = connection();
    stalled.socket.room = 0;
    stalled.send(GET);
    await nextTurn();
    stalled.conn.onTimeout(); // the request was read in this period
    expect(stalled.socket.reset).toBe(false);
    stalled.conn.onTimeout();
    expect(stalled.socket.reset).toBe(true);

    const slow = connection();
    slow.socket.room = 0;
    slow.send(GET);
    await nextTurn();
    slow.conn.onTimeout();
    slow.socket.room = 10;
    slow.conn.onDrain();
    slow.conn.onTimeout();
    expect(slow.socket.reset || slow.socket.ended).toBe(false);
  });

  test("a client that stops reading in the middle of a streamed response is reset after a whole period without taking a byte; one that takes some goes on", async () => {
    const stream = (c: ReturnType<typeof connection>) => {
      const res = c.served.waiting.shift()!;
      res.head(200, "OK", "content-type: text/plain\r\n", "chunked", 0);
      res.flush();
      res.write(Buffer.alloc(64 * 1024, 0x61));
      return res;
    };
    const stalled = connection(true);
    stalled.send(GET);
    stalled.socket.room = 100;
    stream(stalled);
    stalled.conn.onTimeout(); // blocked since just now: not a whole period yet
    expect(stalled.socket.reset).toBe(false);
    stalled.conn.onTimeout();
    expect(stalled.socket.reset).toBe(true);

    const slow = connection(true);
    slow.send(GET);
    slow.socket.room = 100;
    const res = stream(slow);
    slow.conn.onTimeout();
    slow.socket.room = 1000;
    slow.conn.onDrain();
    slow.conn.onTimeout();
    slow.conn.onDrain();
    slow.conn.onTimeout();
    expect(slow.socket.reset || slow.socket.ended).toBe(false);
    slow.socket.room = Infinity;
    slow.conn.onDrain();
    res.end();
    await nextTurn();
    expect(slow.socket.written).toEndWith("0\r\n\r\n");
  });
});

// ---- mesh-mux/1 frames, restated (the test does not trust the code under test) ----

function frame(type: number, id: number, payload = ""): Buffer {
  const body = Buffer.from(payload, "latin1");
  const head = Buffer.alloc(10);
  head[0] = type;
  head.writeUInt32BE(id, 2);
  head.writeUInt32BE(type === 0 ? body.byteLength : 0, 6);
  return Buffer.concat([head, body]);
}

class FakeSessionSocket {
  ended = false;
  terminated = false;
  armed = 0;
  write(_data: Uint8Array, _offset: number, length: number): number {
    return length;
  }
  end(): void {
    this.ended = true;
  }
  terminate(): void {
    this.ended = true;
    this.terminated = true;
  }
  timeout(): void {
    this.armed++;
  }
}

function session() {
  const socket = new FakeSessionSocket();
  const served = service();
  const closed = new Set<number>();
  const conns = new Map<ServerConnection, number>();
  const mux = new MuxSession(socket, "server", {
    accept: (stream) => {
      const conn = new ServerConnection(stream, served.handler, { maxBodyBytes: 1 << 20, idleTimeoutS: IDLE_S }, (c) => closed.add(conns.get(c)!));
      conn.ready = true;
      conns.set(conn, stream.id);
      return conn;
    },
    closed: () => {},
  });
  mux.idleTimeoutS = IDLE_S;
  return { socket, mux, closed, get: (id: number) => mux.onData(frame(0, id, GET)) };
}

describe("a mux session at its idle timer", () => {
  test("each stream is judged on its own period: the idle one ends inside a busy session, the busy one and the session go on", async () => {
    const { socket, mux, closed, get } = session();
    get(1);
    get(3);
    await nextTurn();
    mux.onTimeout();
    expect([...closed]).toEqual([]);
    get(1);
    await nextTurn();
    mux.onTimeout();
    expect([...closed]).toEqual([3]);
    get(1);
    await nextTurn();
    mux.onTimeout();
    expect([...closed]).toEqual([3]);
    expect(socket.ended).toBe(false);
    expect(socket.armed).toBe(3);
  });

  test("a session with no stream closes only after a whole period in which no stream's frame was read", async () => {
    const { socket, mux, get } = session();
    get(1);
    mux.onData(frame(2, 1)); // the client's FIN: stream 1 ends inside this period
    await nextTurn();
    mux.onTimeout();
    await nextTurn();
    expect(socket.ended).toBe(false);
    mux.onTimeout();
    await nextTurn();
    expect(socket.ended).toBe(true);
  });

  test("reads that concern no stream do not keep it: a WINDOW for a stream never opened, part of a frame header", async () => {
    const { socket, mux } = session();
    const window = frame(1, 5);
    window.writeUInt32BE(1, 6);
    mux.onData(window);
    mux.onData(frame(1, 7).subarray(0, 4));
    // The first firing is the new session's grace: it has had no whole period yet.
    mux.onTimeout();
    await nextTurn();
    expect(socket.ended).toBe(false);
    mux.onTimeout();
    await nextTurn();
    // Closed gracefully at its timer, not dropped for a protocol error.
    expect(socket.terminated).toBe(false);
    expect(socket.ended).toBe(true);
  });
});

describe("the real listener with Bun's timer", () => {
  test("over loopback: a client with a request every 0.4 s keeps its connection; a silent one is closed; a slowloris head gets 408", async () => {
    const listener = new H1Listener({
      hostname: "127.0.0.1",
      port: 0,
      // Bun fires on 4-second ticks: 1 s here fires every ~4 s.
      limits: { maxBodyBytes: 1 << 20, idleTimeoutS: 1 },
      handler: service().handler,
      events: { onRefused: () => {}, onOpen: () => {} },
    });
    const port = listener.listen();
    try {
      const client = async () => {
        let text = "";
        let closedAt = -1;
        const t0 = performance.now();
        const socket = await Bun.connect({
          hostname: "127.0.0.1",
          port,
          socket: {
            data: (_s, d) => void (text += d.toString("latin1")),
            close: () => void (closedAt = performance.now() - t0),
          },
        });
        return { socket, text: () => text, closedAt: () => closedAt };
      };
      const busy = await client();
      const silent = await client();
      const loris = await client();
      silent.socket.write(GET);
      loris.socket.write("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ");
      // 9.6 s: past two firings, so a silent connection and a stalled head are both due.
      for (let i = 0; i < 24; i++) {
        busy.socket.write(GET);
        if (loris.closedAt() < 0) loris.socket.write("a");
        await Bun.sleep(400);
      }
      expect(busy.closedAt()).toBe(-1);
      expect(busy.text().split("HTTP/1.1 200 ").length - 1).toBe(24);
      expect(silent.closedAt()).toBeGreaterThan(0);
      expect(silent.text()).toStartWith("HTTP/1.1 200 ");
      expect(loris.text()).toStartWith("HTTP/1.1 408 ");
      expect(loris.closedAt()).toBeGreaterThan(0);
      busy.socket.end();
    } finally {
      listener.closeAll();
    }
  }, 20_000);
});
