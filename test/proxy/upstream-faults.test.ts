/**
 * A service that fails mid-response or answers with broken framing, behind a real proxy
 * pair (threats.md "Faults in the data path", "HTTP/1 framing"). The service is a raw
 * TCP server, so it can send exactly the bytes under test; each case is tried through
 * the whole pair (client → outbound → mTLS → inbound → service) and directly against
 * the inbound mTLS listener.
 *
 * A client must never see a clean, complete 2xx for a body the service did not finish;
 * a response with both Content-Length and Transfer-Encoding is a 502 and the connection
 * it came on is closed; stray bytes after a response never become the next response.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import { clientTls } from "../helpers/data-plane.ts";
import { MeshFixture } from "../helpers/mesh-fixture.ts";
import { rawExchange, type ClientTls } from "../helpers/raw-http.ts";

const SMUGGLED = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled";

/** What the service does for each request path. */
const BEHAVIOUR: Record<string, (s: Socket<Conn>) => void> = {
  "/ok": (s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"),
  // Headers and half the declared body, then the connection dies (RST, or FIN).
  "/cl-short": (s) => (s.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + "x".repeat(50)), later(() => s.terminate())),
  "/cl-short-fin": (s) => (s.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + "x".repeat(50)), later(() => s.end())),
  // A chunked body without its last chunk.
  "/chunked-short": (s) => (s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"), later(() => s.terminate())),
  "/chunked-short-fin": (s) => (s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"), later(() => s.end())),
  // A body cut inside a chunk.
  "/chunked-mid-chunk": (s) => (s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nhello"), later(() => s.terminate())),
  // No response at all.
  "/nothing": (s) => void s.terminate(),
  // Both framings, in either order.
  "/cl-te": (s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
  "/te-cl": (s) => void s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
  // A whole second response glued behind the first, in the same packet or a moment later.
  "/extra-cl": (s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + SMUGGLED),
  "/extra-chunked": (s) => void s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + SMUGGLED),
  "/extra-later": (s) => (s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), later(() => s.write(SMUGGLED), 30)),
};

function later(fn: () => void, ms = 50): void {
  setTimeout(fn, ms);
}

interface Conn {
  id: number;
  buf: string;
  closed: boolean;
}

/** The raw service: one log line per request (`path@connection`), and which connections closed. */
class RawService {
  listener!: TCPSocketListener<Conn>;
  log: { path: string; conn: number }[] = [];
  conns: Conn[] = [];

  start(): number {
    const svc = this;
    this.listener = Bun.listen<Conn>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(s) {
          s.data = { id: svc.conns.length, buf: "", closed: false };
          svc.conns.push(s.data);
        },
        data(s, chunk) {
          s.data.buf += Buffer.from(chunk).toString("latin1");
          for (let end = s.data.buf.indexOf("\r\n\r\n"); end >= 0; end = s.data.buf.indexOf("\r\n\r\n")) {
            const head = s.data.buf.slice(0, end);
            s.data.buf = s.data.buf.slice(end + 4);
            const path = head.split(" ")[1] ?? "";
            svc.log.push({ path, conn: s.data.id });
            (BEHAVIOUR[path] ?? BEHAVIOUR["/ok"]!)(s);
          }
        },
        close(s) {
          s.data.closed = true;
        },
      },
    });
    return this.listener.port;
  }

  requestsFor(path: string): number {
    return this.log.filter((l) => l.path === path).length;
  }
}

/** Whether `text` holds one complete HTTP/1.1 response: its whole declared or chunked body. */
function completeResponse(text: string): boolean {
  const split = text.indexOf("\r\n\r\n");
  if (split < 0) return false;
  const head = text.slice(0, split).toLowerCase();
  let body = text.slice(split + 4);
  const cl = /\r\ncontent-length: *(\d+)/.exec(head);
  if (cl) return body.length >= Number(cl[1]);
  if (!/\r\ntransfer-encoding: *chunked/.test(head)) return false; // delimited by close: cannot tell
  for (let i = 0; i < 10_000; i++) {
    const line = body.indexOf("\r\n");
    if (line < 0) return false;
    const size = parseInt(body.slice(0, line), 16);
    if (Number.isNaN(size)) return false;
    if (size === 0) return body.slice(line + 2).startsWith("\r\n");
    if (body.length < line + 2 + size + 2) return false;
    body = body.slice(line + 2 + size + 2);
  }
  return false;
}

const fx = new MeshFixture();
const svc = new RawService();
let outbound = 0;
let inbound = 0;
let tls: ClientTls;

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  const port = svc.start();
  const payments = await fx.proxy("payments", `http://127.0.0.1:${port}`);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }));
  outbound = orders.ports.outbound;
  inbound = payments.ports.inbound;
  tls = clientTls(fx, "orders");
});
afterAll(async () => {
  await fx.close();
  svc.listener?.stop(true);
});

/** Through the pair with fetch: "status body", or where it failed. */
async function viaPair(path: string): Promise<string> {
  let res: Response;
  try {
    res = await fetch(`http://127.0.0.1:${outbound}${path}`, { headers: { host: "payments" } });
  } catch (err) {
    return `request failed: ${(err as Error).message}`;
  }
  try {
    return `${res.status} ${await res.text()}`;
  } catch (err) {
    return `${res.status} then body failed: ${(err as Error).message}`;
  }
}

function viaRaw(where: "outbound" | "inbound", path: string) {
  return rawExchange(`GET ${path} HTTP/1.1\r\nHost: payments\r\n\r\n`, {
    port: where === "outbound" ? outbound : inbound,
    ...(where === "inbound" ? { tls } : {}),
    quietMs: 700,
    timeoutMs: 5000,
  });
}

describe("the service dies mid-response: the client sees an error, never a complete 2xx", () => {
  for (const path of ["/cl-short", "/cl-short-fin", "/chunked-short", "/chunked-short-fin", "/chunked-mid-chunk"]) {
    test(`${path}: fetch through the pair fails while reading the body`, async () => {
      const before = svc.requestsFor(path);
      const result = await viaPair(path);
      expect(result).toMatch(/^(request failed|200 then body failed)/);
      // The service saw the request once: nothing is retried once response bytes flowed.
      expect(svc.requestsFor(path)).toBe(before + 1);
    });

    for (const where of ["outbound", "inbound"] as const) {
      test(`${path}: on the wire from the ${where} listener, the response is cut off and the connection closed`, async () => {
        const r = await viaRaw(where, path);
        expect(r.closed).toBe(true);
        expect(completeResponse(r.text)).toBe(false);
        // What did arrive is the head of a 200 whose body never completes (or nothing).
        expect(r.statuses.filter((s) => s !== 200)).toEqual([]);
      });
    }
  }

  test("no response at all: 502 upstream-reset", async () => {
    const res = await fetch(`http://127.0.0.1:${outbound}/nothing`, { headers: { host: "payments" } });
    expect(res.status).toBe(502);
    expect(res.headers.get("x-mesh-error")).toBe("upstream-reset");
    await res.arrayBuffer();
  });
});

describe("a response with both Content-Length and Transfer-Encoding", () => {
  for (const path of ["/cl-te", "/te-cl"]) {
    for (const where of ["pair", "inbound"] as const) {
      test(`${path} via ${where}: 502, and the connection it came on is closed and never reused`, async () => {
        const start = svc.log.length;
        let status: number | undefined;
        if (where === "pair") {
          const res = await fetch(`http://127.0.0.1:${outbound}${path}`, { headers: { host: "payments" } });
          status = res.status;
          expect(res.headers.get("x-mesh-error")).toBe("upstream-reset");
          expect((await res.text()).toLowerCase()).toContain("both content-length and transfer-encoding");
        } else {
          const r = await viaRaw("inbound", path);
          status = r.statuses[0];
          expect(r.text).not.toContain("hello");
        }
        expect(status).toBe(502);
        const bad = svc.log.slice(start).find((l) => l.path === path)!;
        expect(bad).toBeDefined();
        // The inbound proxy closed that connection...
        expect(await until(() => svc.conns[bad.conn]!.closed)).toBe(true);
        // ...so the next requests arrive on other connections.
        for (let i = 0; i < 3; i++) expect(await viaPair("/ok")).toBe("200 good");
        expect(svc.log.slice(start).filter((l) => l.conn === bad.conn).map((l) => l.path)).toEqual([path]);
      });
    }
  }
});

describe("bytes after a complete response never become the next response", () => {
  for (const path of ["/extra-cl", "/extra-chunked", "/extra-later"]) {
    test(`${path}: the next requests get their own responses`, async () => {
      const start = svc.log.length;
      expect(await viaPair(path)).toBe("200 ok");
      await Bun.sleep(100); // the stray bytes of /extra-later have arrived on the idle connection
      for (let i = 0; i < 5; i++) expect(await viaPair("/ok")).toBe("200 good");
      const bad = svc.log.slice(start).find((l) => l.path === path)!;
      // fetch drops a connection that has bytes left after a Content-Length body, or that
      // receives bytes while idle. After a chunked body it discards the rest and keeps the
      // connection (the stray response is never read as one; see the report for the
      // remaining race).
      if (path !== "/extra-chunked") {
        expect(svc.conns[bad.conn]!.closed).toBe(true);
        expect(svc.log.slice(start).filter((l) => l.conn === bad.conn).map((l) => l.path)).toEqual([path]);
      }
    });
  }
});

test("the pair still serves after every fault", async () => {
  expect(await viaPair("/ok")).toBe("200 good");
  const r = await viaRaw("inbound", "/ok");
  expect(r.statuses).toEqual([200]);
  expect(completeResponse(r.text)).toBe(true);
});

async function until(cond: () => boolean, ms = 2000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await Bun.sleep(10);
  }
  return true;
}
