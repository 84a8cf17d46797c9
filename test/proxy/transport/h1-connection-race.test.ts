/**
 * The keep-alive race at the connection: a request given to a connection that closed
 * since it was handed out goes back to the owner to be sent again only when that
 * connection had carried an earlier exchange; on a fresh one it fails, nothing written.
 * (The race after the write, a reused connection closed with no response byte, is
 * covered through the pool in h1-client.test.ts.)
 */
import { afterEach, expect, test } from "bun:test";
import { H1Connection, type ConnectionOwner } from "../../../src/proxy/transport/h1/connection.ts";
import { ResetError } from "../../../src/proxy/transport/h1/errors.ts";
import { prepareRequest, type PreparedRequest } from "../../../src/proxy/transport/h1/request-head.ts";
import { StreamedResponse } from "../../../src/proxy/transport/h1/response-sink.ts";
import { rawServer, type RawServer } from "../../helpers/raw-h1-server.ts";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function server(): RawServer {
  const s = rawServer((r) => r.reply("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
  cleanups.push(() => s.stop());
  return s;
}

/** An owner that records what the connection tells it. */
class RecordingOwner implements ConnectionOwner {
  reused = 0;
  readonly retried: PreparedRequest[] = [];
  reusable(): void {
    this.reused++;
  }
  closed(): void {}
  handshake(): void {}
  retryStale(req: PreparedRequest): void {
    this.retried.push(req);
  }
}

const request = () => prepareRequest("GET", "/", new Headers(), false, "127.0.0.1");

async function connect(port: number, owner: ConnectionOwner): Promise<H1Connection> {
  return H1Connection.connect({ host: "127.0.0.1", port, connectTimeoutMs: 2000 }, owner);
}

test("a reused connection closed before the request was written hands the request back to be sent again", async () => {
  const owner = new RecordingOwner();
  const conn = await connect(server().port, owner);
  const first = new StreamedResponse();
  conn.exchange(request(), null, first, undefined);
  expect(await (await first.promise).text()).toBe("ok");
  expect(owner.reused).toBe(1);
  conn.close();

  const again = request();
  const sink = new StreamedResponse();
  conn.exchange(again, null, sink, undefined);
  expect(owner.retried).toEqual([again]);
});

test("a fresh connection closed before the request was written fails it: nothing sent, not handed back", async () => {
  const owner = new RecordingOwner();
  const conn = await connect(server().port, owner);
  conn.close();
  const sink = new StreamedResponse();
  conn.exchange(request(), null, sink, undefined);
  const err = await sink.promise.then(
    () => undefined,
    (e: Error) => e,
  );
  expect(err).toBeInstanceOf(ResetError);
  expect(err).toMatchObject({ requestSent: false, responseBytes: 0 });
  expect(owner.retried).toEqual([]);
});
