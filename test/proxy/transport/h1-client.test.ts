/**
 * The pooled HTTP/1.1 client against real servers on loopback: Bun.serve for the
 * well-behaved cases, a scripted Bun.listen server (raw bytes) for everything a
 * well-behaved server would never send.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import {
  AbortedError,
  ConnectError,
  Http1Pool,
  ProtocolError,
  RequestBodyError,
  ResetError,
  TimeoutError,
  type PoolOptions,
} from "../../../src/proxy/transport/h1/index.ts";
import { headerOf, rawServer, type RawRequest, type RawServer } from "../../helpers/raw-h1-server.ts";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function newPool(port: number, opts: Partial<PoolOptions> = {}): Http1Pool {
  const pool = new Http1Pool({ host: "127.0.0.1", port, connectTimeoutMs: 2000, idleTimeoutMs: 5000, ...opts });
  cleanups.push(() => pool.close());
  return pool;
}

function raw(onRequest: (r: RawRequest) => void, opts?: Parameters<typeof rawServer>[1]): RawServer {
  const s = rawServer(onRequest, opts);
  cleanups.push(() => s.stop());
  return s;
}

function serve(fetch: (req: Request, server: Server<undefined>) => Response | Promise<Response>): Server<undefined> {
  const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch });
  cleanups.push(() => s.stop(true));
  return s;
}

const get = (pool: Http1Pool, path = "/", headers: Record<string, string> = {}, signal?: AbortSignal) =>
  pool.send({ method: "GET", pathAndQuery: path, headers: new Headers(headers), body: null, signal });

/** Resolves with the rejection, failing if `p` resolves. */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await Bun.sleep(5);
  }
}

const ok = (body = "ok", extra = "") => `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n${extra}\r\n${body}`;

describe("exchanges with a well-behaved server", () => {
  test("status, headers and a streamed body; the Host header defaults to host:port", async () => {
    const s = serve((req) => new Response(`hello ${req.headers.get("host")} ${new URL(req.url).search}`, { status: 201, headers: { "x-a": "1" } }));
    const res = await get(newPool(s.port!), "/x?y=1");
    expect(res.status).toBe(201);
    expect(res.headers.get("x-a")).toBe("1");
    expect(await res.text()).toBe(`hello 127.0.0.1:${s.port} ?y=1`);
  });

  test("the reason phrase is passed on as statusText", async () => {
    // Bun.serve always sends the standard phrase, so a raw server says something else.
    const s = raw((r) => r.reply("HTTP/1.1 201 Made It\r\ncontent-length: 0\r\n\r\n"));
    expect((await get(newPool(s.port))).statusText).toBe("Made It");
  });

  test("the caller's Host header is kept", async () => {
    const s = serve((req) => new Response(req.headers.get("host")));
    expect(await (await get(newPool(s.port!), "/", { host: "payments.shop" })).text()).toBe("payments.shop");
  });

  test("keep-alive: sequential requests share one connection", async () => {
    const ports = new Set<number>();
    const s = serve((req, server) => {
      ports.add(server.requestIP(req)!.port);
      return new Response("x");
    });
    const pool = newPool(s.port!);
    for (let i = 0; i < 20; i++) expect(await (await get(pool)).text()).toBe("x");
    expect(ports.size).toBe(1);
    expect(pool.stats).toMatchObject({ created: 1, reused: 19, open: 1, idle: 1, busy: 0 });
  });

  test("a connection goes back to the pool once its whole response arrived (read or not); concurrent requests open more", async () => {
    const s = raw((r) => {
      r.reply("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello");
      setTimeout(() => r.reply("world"), 50);
    });
    const pool = newPool(s.port);
    const a = await get(pool);
    const b = await get(pool);
    expect(pool.stats).toMatchObject({ created: 2, busy: 2, idle: 0 });
    await until(() => pool.stats.idle === 2);
    expect(await a.text()).toBe("helloworld");
    expect(await b.text()).toBe("helloworld");
  });

  test("busy connections are counted exactly whatever order they finish or die in", async () => {
    // The first five requests are held; then they are answered out of order, and two of
    // them get their connection destroyed instead: the pool's busy list swaps entries out.
    const held: RawRequest[] = [];
    const s = raw((r) => (held.length < 5 ? held.push(r) : r.reply(ok())));
    const pool = newPool(s.port);
    const calls = [0, 1, 2, 3, 4].map(() => get(pool).then((res) => res.text(), (err: Error) => err.name));
    await until(() => held.length === 5);
    expect(pool.stats).toMatchObject({ open: 5, busy: 5, idle: 0 });
    const finish = [
      [1, "reply"],
      [4, "destroy"],
      [0, "reply"],
      [3, "reply"],
      [2, "destroy"],
    ] as const;
    let busy = 5;
    let idle = 0;
    for (const [i, how] of finish) {
      if (how === "reply") held[i]!.reply(ok());
      else held[i]!.destroy();
      busy--;
      if (how === "reply") idle++;
      await until(() => pool.stats.busy === busy);
      expect(pool.stats).toMatchObject({ open: busy + idle, busy, idle });
    }
    expect(await Promise.all(calls)).toEqual(["ok", "ok", "ResetError", "ok", "ResetError"]);
    // The three idle connections carry the next requests, one at a time.
    for (let i = 0; i < 3; i++) expect(await (await get(pool)).text()).toBe("ok");
    expect(pool.stats).toMatchObject({ open: 3, busy: 0, idle: 3, created: 5 });
  });

  test("idle connections are reused last-in first-out", async () => {
    const s = serve(async (req, server) => {
      await Bun.sleep(Number(new URL(req.url).searchParams.get("ms") ?? 0));
      return new Response(String(server.requestIP(req)!.port));
    });
    const pool = newPool(s.port!);
    const slow = get(pool, "/?ms=80");
    const fast = get(pool, "/?ms=10");
    const fastPort = await (await fast).text(); // goes idle first
    const slowPort = await (await slow).text(); // goes idle last
    expect(fastPort).not.toBe(slowPort);
    expect(await (await get(pool)).text()).toBe(slowPort);
  });

  test("idle connections close after idleTimeoutMs", async () => {
    const s = raw((r) => r.reply(ok()));
    const pool = newPool(s.port, { idleTimeoutMs: 100 });
    await (await get(pool)).text();
    expect(pool.stats.idle).toBe(1);
    await until(() => pool.stats.open === 0 && s.closed === 1, 1000);
    await (await get(pool)).text();
    expect(pool.stats.created).toBe(2);
  });

  test("maxConnections: extra requests wait for a free connection", async () => {
    const s = serve(async () => {
      await Bun.sleep(20);
      return new Response("z");
    });
    const pool = newPool(s.port!, { maxConnections: 2 });
    const all = Array.from({ length: 6 }, () => get(pool).then((r) => r.text()));
    await Bun.sleep(5);
    expect(pool.stats).toMatchObject({ open: 2, waiting: 4 });
    expect(await Promise.all(all)).toEqual(Array(6).fill("z"));
    expect(pool.stats.created).toBe(2);
  });

  test("maxConnections: a connection that closes frees its slot for a waiting request", async () => {
    const s = raw((r) => setTimeout(() => r.reply(ok(`conn ${r.conn}`, "connection: close\r\n")), 10));
    const pool = newPool(s.port, { maxConnections: 1 });
    const all = await Promise.all(Array.from({ length: 3 }, () => get(pool).then((r) => r.text())));
    expect(all.sort()).toEqual(["conn 0", "conn 1", "conn 2"]);
    expect(pool.stats).toMatchObject({ created: 3, waiting: 0 });
  });

  test("a request body of known length keeps its content-length; unknown length goes chunked", async () => {
    const s = raw((r) => r.reply(ok(`${headerOf(r.head, "content-length") ?? "-"} ${headerOf(r.head, "transfer-encoding") ?? "-"} ${r.body}`)));
    const pool = newPool(s.port);
    const known = await pool.send({ method: "POST", pathAndQuery: "/", headers: new Headers({ "content-length": "6" }), body: new Blob(["abc", "def"]).stream() });
    expect(await known.text()).toBe("6 - abcdef");
    const unknown = await pool.send({ method: "POST", pathAndQuery: "/", headers: new Headers(), body: new Blob(["abc", "def"]).stream() });
    expect(await unknown.text()).toBe("- chunked abcdef");
    expect(pool.stats.created).toBe(1);
  });

  test("the caller's connection-level headers are not forwarded", async () => {
    const s = raw((r) => r.reply(ok()));
    const pool = newPool(s.port);
    await (await get(pool, "/", { connection: "close", "keep-alive": "1", upgrade: "h2c", te: "trailers", "x-keep": "yes" })).text();
    const head = s.requests[0]!.head.toLowerCase();
    expect(head).toContain("x-keep: yes\r\n");
    for (const h of ["connection:", "keep-alive:", "upgrade:", "te:"]) expect(head).not.toContain(h);
    expect(pool.stats.idle).toBe(1);
  });
});

describe("responses without a body, interim responses, end of connection", () => {
  test("HEAD: no body whatever content-length says, and the connection is reused", async () => {
    const s = raw((r) => r.reply(r.head.startsWith("HEAD") ? "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n" : ok("after")));
    const pool = newPool(s.port);
    const res = await pool.send({ method: "HEAD", pathAndQuery: "/", headers: new Headers(), body: null });
    expect(res.headers.get("content-length")).toBe("1234");
    expect(res.body).toBeNull();
    expect(await (await get(pool)).text()).toBe("after");
    expect(pool.stats.created).toBe(1);
  });

  test("204 and 304 have no body; the connection is reused", async () => {
    const s = raw((r) => r.reply(r.nth === 0 ? "HTTP/1.1 204 No Content\r\n\r\n" : r.nth === 1 ? "HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n" : ok("third")));
    const pool = newPool(s.port);
    const a = await get(pool);
    expect([a.status, a.body]).toEqual([204, null]);
    const b = await get(pool);
    expect([b.status, b.body]).toEqual([304, null]);
    expect(await (await get(pool)).text()).toBe("third");
    expect(pool.stats.created).toBe(1);
  });

  test("100 Continue and 103 Early Hints are skipped", async () => {
    const s = raw((r) => r.reply("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + ok("final")));
    const res = await get(newPool(s.port));
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("final");
  });

  test("interim responses split across reads", async () => {
    const s = raw((r) => {
      r.reply("HTTP/1.1 100 Cont");
      setTimeout(() => r.reply("inue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-le"), 20);
      setTimeout(() => r.reply("ngth: 2\r\n\r\nhi"), 40);
    });
    expect(await (await get(newPool(s.port))).text()).toBe("hi");
  });

  test("101 Switching Protocols (never requested) is a protocol error", async () => {
    const s = raw((r) => r.reply("HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n"));
    expect(await rejection(get(newPool(s.port)))).toBeInstanceOf(ProtocolError);
  });

  test("no content-length or transfer-encoding: the body runs to the close; the connection is not reused", async () => {
    const s = raw((r) => {
      r.reply("HTTP/1.1 200 OK\r\n\r\npart one, ");
      setTimeout(() => {
        r.reply("part two");
        r.end();
      }, 20);
    });
    const pool = newPool(s.port);
    expect(await (await get(pool)).text()).toBe("part one, part two");
    await until(() => pool.stats.open === 0);
    expect(pool.stats.idle).toBe(0);
  });

  test("connection: close in the response: not reused", async () => {
    const s = raw((r) => r.reply(ok("bye", "connection: close\r\n")));
    const pool = newPool(s.port);
    expect(await (await get(pool)).text()).toBe("bye");
    await until(() => s.closed === 1);
    expect(pool.stats.open).toBe(0);
    await (await get(pool)).text();
    expect(pool.stats.created).toBe(2);
  });

  test("HTTP/1.0: not reused unless it says keep-alive", async () => {
    const s = raw((r) =>
      r.reply(r.conn === 0 ? "HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\none" : "HTTP/1.0 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive\r\n\r\ntwo"),
    );
    const pool = newPool(s.port);
    expect(await (await get(pool)).text()).toBe("one");
    expect(await (await get(pool)).text()).toBe("two");
    expect(await (await get(pool)).text()).toBe("two");
    expect(pool.stats).toMatchObject({ created: 2, reused: 1 });
  });

  test("chunked with extensions and trailers; the connection is reused", async () => {
    const s = raw((r) => r.reply("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nx-checksum: 1\r\n\r\n"));
    const pool = newPool(s.port);
    expect(await (await get(pool)).text()).toBe("hello!");
    expect(await (await get(pool)).text()).toBe("hello!");
    expect(pool.stats.created).toBe(1);
  });
});

describe("framing errors: 502 material, and the connection is never reused", () => {
  const cases: [string, string][] = [
    ["both content-length and transfer-encoding", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
    ["two different content-lengths", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nhello"],
    ["a non-decimal content-length", "HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\nhello"],
    ["bare LF line endings", "HTTP/1.1 200 OK\ncontent-length: 5\n\nhello"],
    ["a bare CR", "HTTP/1.1 200 OK\r\nx: a\rb\r\ncontent-length: 5\r\n\r\nhello"],
    ["obs-fold", "HTTP/1.1 200 OK\r\nx: a\r\n b\r\ncontent-length: 5\r\n\r\nhello"],
    ["NUL in a header", "HTTP/1.1 200 OK\r\nx: a\0b\r\ncontent-length: 5\r\n\r\nhello"],
    ["TE on HTTP/1.0", "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
    ["a disguised transfer-encoding", "HTTP/1.1 200 OK\r\ntransfer-encoding: xchunked\r\n\r\nhello"],
    ["a status line that is not HTTP/1.x", "HTTP/2 200 OK\r\ncontent-length: 5\r\n\r\nhello"],
    ["status 600", "HTTP/1.1 600 Odd\r\ncontent-length: 5\r\n\r\nhello"],
  ];
  for (const [name, response] of cases) {
    test(name, async () => {
      const s = raw((r) => r.reply(r.conn === 0 ? response : ok("clean")));
      const pool = newPool(s.port);
      const err = await rejection(get(pool));
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as ProtocolError).requestSent).toBe(true);
      await until(() => s.closed === 1);
      expect(await (await get(pool)).text()).toBe("clean");
      expect(pool.stats).toMatchObject({ created: 2, staleRetries: 0 });
    });
  }

  test("a response head over 64 KiB", async () => {
    const s = raw((r) => r.reply(`HTTP/1.1 200 OK\r\nx: ${"a".repeat(70_000)}\r\ncontent-length: 0\r\n\r\n`));
    expect((await rejection(get(newPool(s.port)))).message).toContain("larger than");
    await until(() => s.closed === 1);
  });

  test("a bad chunk size arriving with the head fails the request itself", async () => {
    const s = raw((r) => r.reply(r.conn === 0 ? "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n" : ok("clean")));
    const pool = newPool(s.port);
    expect(await rejection(get(pool))).toBeInstanceOf(ProtocolError);
    await until(() => s.closed === 1);
    expect(await (await get(pool)).text()).toBe("clean");
  });

  test("a bad chunk size arriving later errors the body stream and closes the connection", async () => {
    const s = raw((r) => {
      if (r.conn > 0) return r.reply(ok("clean"));
      r.reply("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n");
      setTimeout(() => r.reply("zz\r\n"), 20);
    });
    const pool = newPool(s.port);
    const res = await get(pool);
    expect(res.status).toBe(200);
    expect(await rejection(res.text())).toBeInstanceOf(ProtocolError);
    await until(() => s.closed === 1);
    expect(await (await get(pool)).text()).toBe("clean");
  });

  test("bytes after a complete response (unsolicited): the response is served, the connection is not reused", async () => {
    const s = raw((r) => r.reply(r.conn === 0 ? ok("first") + "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled" : ok("clean")));
    const pool = newPool(s.port);
    expect(await (await get(pool)).text()).toBe("first");
    await until(() => s.closed === 1);
    expect(await (await get(pool)).text()).toBe("clean");
    expect(pool.stats.created).toBe(2);
  });

  test("bytes arriving later on an idle connection: it is closed, never reused", async () => {
    const s = raw((r) => {
      r.reply(ok(r.conn === 0 ? "first" : "clean"));
      if (r.conn === 0) setTimeout(() => r.reply("HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"), 30);
    });
    const pool = newPool(s.port);
    expect(await (await get(pool)).text()).toBe("first");
    await until(() => s.closed === 1);
    expect(pool.stats.open).toBe(0);
    expect(await (await get(pool)).text()).toBe("clean");
  });

  test("bytes read after a request was handed a reused connection, before it was written: nobody's answer; the request goes, untouched, on a fresh one", async () => {
    const s = raw((r) => r.reply(ok(`conn ${r.conn}: ${r.head.split(" ")[1]}`)));
    const pool = newPool(s.port);
    expect(await (await get(pool, "/first")).text()).toBe("conn 0: /first");
    const idle = (pool as unknown as { idleConns: { onData(chunk: Buffer): void }[] }).idleConns[0]!;
    // Handed the idle connection at once, its write held to the end of this turn; the stray
    // bytes are read in this same turn, as a service's unsolicited answer would be.
    const second = get(pool, "/second");
    idle.onData(Buffer.from("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\npoison"));
    expect(await (await second).text()).toBe("conn 1: /second");
    expect(s.requests.map((r) => [r.conn, r.head.split(" ")[1]])).toEqual([
      [0, "/first"],
      [1, "/second"],
    ]);
  });

  test("bytes after the end of a chunked body: not reused", async () => {
    const s = raw((r) => r.reply(r.conn === 0 ? "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nEXTRA" : ok("clean")));
    const pool = newPool(s.port);
    expect(await (await get(pool)).text()).toBe("hi");
    await until(() => s.closed === 1);
    expect(await (await get(pool)).text()).toBe("clean");
  });
});

describe("bodies cut short error the stream; they never end cleanly", () => {
  const cases: [string, string][] = [
    ["content-length not reached", "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly fifty bytes.................................."],
    ["chunked without the terminating 0-chunk", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"],
    ["chunked cut inside a chunk", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nhel"],
    ["chunked cut inside the trailers", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n"],
  ];
  for (const [name, response] of cases) {
    test(name, async () => {
      const s = raw((r) => {
        r.reply(response);
        setTimeout(() => r.end(), 20);
      });
      const res = await get(newPool(s.port));
      expect(res.status).toBe(200);
      const err = await rejection(res.text());
      expect(err).toBeInstanceOf(ResetError);
      expect((err as ResetError).requestSent).toBe(true);
    });
  }

  test("a reset mid-body errors the stream too", async () => {
    const s = raw((r) => {
      r.reply("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nsome");
      setTimeout(() => r.destroy(), 20);
    });
    const res = await get(newPool(s.port));
    expect(await rejection(res.arrayBuffer())).toBeInstanceOf(ResetError);
  });
});

describe("resets, timeouts and the keep-alive race", () => {
  test("connection refused: ConnectError, nothing sent", async () => {
    const s = raw(() => {});
    const port = s.port;
    s.stop();
    const err = await rejection(get(newPool(port)));
    expect(err).toBeInstanceOf(ConnectError);
    expect(err).toMatchObject({ reason: "refused", requestSent: false });
  });

  test("a fresh connection closed before any response byte: ResetError(requestSent), not retried", async () => {
    const s = raw((r) => r.destroy());
    const pool = newPool(s.port);
    const err = await rejection(get(pool));
    expect(err).toBeInstanceOf(ResetError);
    expect(err).toMatchObject({ requestSent: true, responseBytes: 0 });
    expect(pool.stats).toMatchObject({ created: 1, staleRetries: 0 });
  });

  test("closed in the middle of the response head: ResetError with the bytes received, not retried", async () => {
    const s = raw((r) => {
      if (r.nth === 0) return r.reply(ok());
      r.reply("HTTP/1.1 200 OK\r\ncontent-");
      setTimeout(() => r.destroy(), 20);
    });
    const pool = newPool(s.port);
    await (await get(pool)).text();
    const err = await rejection(get(pool));
    expect(err).toBeInstanceOf(ResetError);
    expect((err as ResetError).responseBytes).toBeGreaterThan(0);
    expect(pool.stats.staleRetries).toBe(0);
  });

  /** The server answers the first request on a connection and drops the connection on the second, unanswered. */
  const dropsSecond = () => raw((r) => (r.nth === 0 ? r.reply(ok(`conn ${r.conn}`)) : r.destroy()));

  test("a reused connection closed with no response byte: a GET is retried once on a fresh connection", async () => {
    const s = dropsSecond();
    const pool = newPool(s.port);
    expect(await (await get(pool)).text()).toBe("conn 0");
    expect(await (await get(pool)).text()).toBe("conn 1");
    expect(pool.stats).toMatchObject({ created: 2, staleRetries: 1 });
  });

  test("a bodiless POST with an Idempotency-Key is retried too", async () => {
    const s = dropsSecond();
    const pool = newPool(s.port);
    await (await get(pool)).text();
    const res = await pool.send({ method: "POST", pathAndQuery: "/", headers: new Headers({ "idempotency-key": "k" }), body: null });
    expect(await res.text()).toBe("conn 1");
  });

  test("a bodiless POST without one is not: it may have been processed", async () => {
    const s = dropsSecond();
    const pool = newPool(s.port);
    await (await get(pool)).text();
    const err = await rejection(pool.send({ method: "POST", pathAndQuery: "/", headers: new Headers(), body: null }));
    expect(err).toBeInstanceOf(ResetError);
    expect(err).toMatchObject({ requestSent: true, responseBytes: 0 });
    expect(pool.stats.staleRetries).toBe(0);
  });

  test("a request with a body is not retried", async () => {
    const s = dropsSecond();
    const pool = newPool(s.port);
    await (await get(pool)).text();
    const err = await rejection(pool.send({ method: "PUT", pathAndQuery: "/", headers: new Headers(), body: new Blob(["data"]).stream() }));
    expect(err).toBeInstanceOf(ResetError);
    expect(pool.stats.staleRetries).toBe(0);
  });

  test("retried once only: a second drop goes to the caller", async () => {
    const s = raw((r) => (r.conn === 0 && r.nth === 0 ? r.reply(ok()) : r.destroy()));
    const pool = newPool(s.port);
    await (await get(pool)).text();
    expect(await rejection(get(pool))).toBeInstanceOf(ResetError);
    expect(pool.stats).toMatchObject({ created: 2, staleRetries: 1 });
  });

  test("a server that closed an idle connection: the pool notices and opens a new one", async () => {
    const s = raw((r) => {
      r.reply(ok(`conn ${r.conn}`));
      r.end();
    });
    const pool = newPool(s.port);
    expect(await (await get(pool)).text()).toBe("conn 0");
    await until(() => pool.stats.open === 0);
    expect(await (await get(pool)).text()).toBe("conn 1");
    expect(pool.stats.staleRetries).toBe(0);
  });

  test("signal timeout before the response head: TimeoutError(requestSent), connection destroyed", async () => {
    const s = raw(() => {});
    const pool = newPool(s.port);
    const started = performance.now();
    const err = await rejection(get(pool, "/", {}, AbortSignal.timeout(100)));
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as TimeoutError).requestSent).toBe(true);
    expect(performance.now() - started).toBeLessThan(1000);
    await until(() => s.closed === 1);
    expect(pool.stats.open).toBe(0);
  });

  test("an abort for another reason: AbortedError carrying the reason", async () => {
    const s = raw(() => {});
    const ac = new AbortController();
    const p = get(newPool(s.port), "/", {}, ac.signal);
    setTimeout(() => ac.abort(new Error("client went away")), 20);
    const err = await rejection(p);
    expect(err).toBeInstanceOf(AbortedError);
    expect((err.cause as Error).message).toBe("client went away");
  });

  test("an already aborted signal: nothing is sent", async () => {
    const s = raw((r) => r.reply(ok()));
    const pool = newPool(s.port);
    const err = await rejection(get(pool, "/", {}, AbortSignal.abort(new DOMException("late", "TimeoutError"))));
    expect(err).toMatchObject({ name: "TimeoutError", requestSent: false });
    expect(s.accepted).toBe(0);
  });

  test("aborting after the head errors the body", async () => {
    const s = raw((r) => r.reply("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nstart"));
    const ac = new AbortController();
    const res = await get(newPool(s.port), "/", {}, ac.signal);
    ac.abort(new DOMException("gone", "TimeoutError"));
    expect(await rejection(res.text())).toBeInstanceOf(TimeoutError);
  });

  test("a request waiting for a connection at maxConnections honours its signal", async () => {
    const s = raw(() => {});
    const pool = newPool(s.port, { maxConnections: 1 });
    const first = get(pool, "/", {}, AbortSignal.timeout(500));
    const err = await rejection(get(pool, "/", {}, AbortSignal.timeout(50)));
    expect(err).toMatchObject({ name: "TimeoutError", requestSent: false });
    expect(pool.stats.waiting).toBe(0);
    await rejection(first);
  });
});

describe("request bodies and early responses", () => {
  test("a body longer than its content-length: RequestBodyError, connection destroyed", async () => {
    const s = raw(() => {}, { recordOnly: true });
    const pool = newPool(s.port);
    const err = await rejection(pool.send({ method: "POST", pathAndQuery: "/", headers: new Headers({ "content-length": "3" }), body: new Blob(["abcdef"]).stream() }));
    expect(err).toBeInstanceOf(RequestBodyError);
    await until(() => s.closed === 1);
    expect(s.received[0]).not.toContain("abc");
  });

  test("a body shorter than its content-length: RequestBodyError", async () => {
    const s = raw(() => {}, { recordOnly: true });
    const err = await rejection(newPool(s.port).send({ method: "POST", pathAndQuery: "/", headers: new Headers({ "content-length": "10" }), body: new Blob(["abc"]).stream() }));
    expect(err).toBeInstanceOf(RequestBodyError);
  });

  test("a failing body stream: RequestBodyError, connection destroyed", async () => {
    const s = raw(() => {}, { recordOnly: true });
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode("part"));
        setTimeout(() => c.error(new Error("client disconnected")), 20);
      },
    });
    const err = await rejection(newPool(s.port).send({ method: "POST", pathAndQuery: "/", headers: new Headers(), body }));
    expect(err).toBeInstanceOf(RequestBodyError);
    await until(() => s.closed === 1);
    expect(s.received[0]).toContain("4\r\npart\r\n");
    expect(s.received[0]).not.toContain("0\r\n\r\n");
  });

  test("a response before the request body is complete: served, the upload stops, the connection is not reused", async () => {
    const s = raw((r) => r.reply(ok("too large")), { onOpen: () => {} });
    // rawServer parses whole requests only; answer as soon as the head arrives instead.
    s.stop();
    let cancelled = false;
    const early = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(sock, chunk) {
          if (chunk.toString("latin1").includes("\r\n\r\n")) sock.write("HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large");
        },
      },
    });
    cleanups.push(() => early.stop(true));
    const body = new ReadableStream<Uint8Array>({
      pull: async (c) => {
        await Bun.sleep(10);
        c.enqueue(new Uint8Array(1000));
      },
      cancel: () => {
        cancelled = true;
      },
    });
    const pool = newPool(early.port);
    const res = await pool.send({ method: "POST", pathAndQuery: "/", headers: new Headers(), body });
    expect(res.status).toBe(413);
    expect(await res.text()).toBe("too large");
    await until(() => cancelled && pool.stats.open === 0);
  });

  test("cancelling a response body closes the connection instead of reusing it", async () => {
    const s = raw((r) => r.reply(r.conn === 0 ? "HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + "x".repeat(1000) : ok("clean")));
    const pool = newPool(s.port);
    const res = await get(pool);
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    await until(() => s.closed === 1);
    expect(await (await get(pool)).text()).toBe("clean");
  });
});

describe("closing the pool", () => {
  test("idle connections close now, in-flight ones when done; new requests are refused", async () => {
    const s = raw((r) => (r.head.startsWith("GET /slow") ? setTimeout(() => r.reply(ok("slow")), 50) : r.reply(ok())));
    const pool = newPool(s.port);
    const slow = get(pool, "/slow");
    await (await get(pool)).text();
    expect(pool.stats).toMatchObject({ busy: 1, idle: 1 });
    pool.close();
    expect(pool.stats.idle).toBe(0);
    expect(await (await slow).text()).toBe("slow");
    await until(() => pool.stats.open === 0 && s.closed === 2);
    const err = await rejection(get(pool));
    expect(err).toMatchObject({ name: "ConnectError", reason: "closed" });
  });
});
