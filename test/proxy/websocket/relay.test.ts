/**
 * The relay against fake sockets: the paths real traffic reaches only by timing
 * (messages before the client side is open, queue overflow, dropped sends, closes
 * that cannot be sent as codes) are driven here on purpose.
 */
import { describe, expect, test } from "bun:test";
import type { ServerWebSocket } from "bun";
import type { ClientWebSocket } from "../../../src/proxy/websocket/client.ts";
import { DEFAULT_RELAY_LIMITS, Relay, type RelayLimits } from "../../../src/proxy/websocket/relay.ts";

class FakeUpstream extends EventTarget {
  readyState = 1;
  bufferedAmount = 0;
  binaryType = "blob";
  paused = false;
  sent: unknown[] = [];
  closedWith?: unknown[];
  send(m: unknown) {
    this.sent.push(m);
  }
  pause() {
    this.paused = true;
    return true;
  }
  resume() {
    this.paused = false;
    return true;
  }
  close(...args: unknown[]) {
    this.closedWith = args;
    this.readyState = 2;
  }
  terminate() {
    this.closedWith = ["terminate"];
    this.readyState = 3;
  }
  say(data: string | Buffer) {
    this.dispatchEvent(new MessageEvent("message", { data }));
  }
  hangUp(code: number, reason = "") {
    this.readyState = 3;
    this.dispatchEvent(new CloseEvent("close", { code, reason }));
  }
}

class FakeDownstream {
  readyState = 1;
  paused = false;
  got: unknown[] = [];
  closedWith?: unknown[];
  /** What send() reports next; then it reports bytes. */
  statuses: number[] = [];
  send(m: string | Buffer) {
    this.got.push(m);
    return this.statuses.shift() ?? (typeof m === "string" ? m.length : m.byteLength);
  }
  pause() {
    this.paused = true;
  }
  resume() {
    this.paused = false;
  }
  close(...args: unknown[]) {
    this.closedWith = args;
    this.readyState = 3;
  }
  terminate() {
    this.closedWith = ["terminate"];
    this.readyState = 3;
  }
}

function setup(limits: Partial<RelayLimits> = {}) {
  const up = new FakeUpstream();
  const down = new FakeDownstream();
  let ended = 0;
  const relay = new Relay(up as unknown as ClientWebSocket, { ...DEFAULT_RELAY_LIMITS, ...limits }, () => ended++);
  const attach = () => relay.attach(down as unknown as ServerWebSocket<Relay>);
  return { up, down, relay, attach, ended: () => ended };
}

describe("before the client side is open", () => {
  test("upstream messages are held, in order, and flushed first; reading resumes after", () => {
    const { up, down, relay, attach } = setup();
    relay.upstreamOpened();
    expect(up.paused).toBe(true);
    up.say("one");
    up.say(Buffer.from([2]));
    up.say("three");
    expect(down.got).toEqual([]);
    attach();
    expect(down.got).toEqual(["one", Buffer.from([2]), "three"]);
    expect(up.paused).toBe(false);
    expect(up.binaryType).toBe("nodebuffer");
  });

  test("an upstream that says something and closes: the client gets the words, then the close", () => {
    const { up, down, attach } = setup();
    up.say("last words");
    up.hangUp(4002, "bye");
    attach();
    expect(down.got).toEqual(["last words"]);
    expect(down.closedWith).toEqual([4002, "bye"]);
  });

  test("too many queued bytes closes both sides with 1013; one message larger than the queue with 1009", () => {
    const a = setup({ maxQueuedBytes: 10 });
    a.up.say("123456");
    a.up.say("789012");
    expect(a.up.closedWith).toEqual([1013, "mesh: relay queue full"]);
    a.attach();
    expect(a.down.got).toEqual([]);
    expect(a.down.closedWith).toEqual([1013, "mesh: relay queue full"]);
    expect(a.ended()).toBe(1);

    const b = setup({ maxQueuedBytes: 10 });
    b.up.say("x".repeat(11));
    expect(b.up.closedWith).toEqual([1009, "mesh: relay queue full"]);
  });

  test("too many queued messages closes with 1013", () => {
    const { up } = setup({ maxQueuedMessages: 2 });
    up.say("a");
    up.say("b");
    up.say("c");
    expect(up.closedWith?.[0]).toBe(1013);
  });
});

describe("backpressure", () => {
  test("client side backpressured (-1): upstream paused until drain", () => {
    const { up, down, relay, attach } = setup();
    attach();
    down.statuses = [-1];
    up.say("big");
    expect(up.paused).toBe(true);
    relay.downstreamDrained();
    expect(up.paused).toBe(false);
  });

  test("a dropped send (0) closes with 1013, but an empty message reporting 0 is fine", () => {
    const { up, down, attach } = setup();
    attach();
    down.statuses = [0];
    up.say("");
    expect(down.closedWith).toBeUndefined();
    down.statuses = [0];
    up.say("lost");
    expect(down.closedWith).toEqual([1013, "mesh: client too slow"]);
    expect(up.closedWith).toEqual([1013, "mesh: client too slow"]);
  });

  test("upstream buffer over the high-water mark pauses the client side until below the low-water mark", async () => {
    const { up, down, relay, attach } = setup({ highWaterBytes: 100, lowWaterBytes: 10 });
    attach();
    up.bufferedAmount = 101;
    relay.fromDownstream("x");
    expect(down.paused).toBe(true);
    up.bufferedAmount = 50;
    await Bun.sleep(20);
    expect(down.paused).toBe(true);
    up.bufferedAmount = 10;
    for (let i = 0; i < 50 && down.paused; i++) await Bun.sleep(5);
    expect(down.paused).toBe(false);
  });
});

describe("closes", () => {
  test("client closes: code and reason go upstream; 1005 as no code; 1006 as a dropped connection", () => {
    for (const [code, expected] of [
      [4001, [4001, "r"]],
      [1000, [1000, "r"]],
      [1005, []],
      [1006, ["terminate"]],
      [1015, ["terminate"]],
    ] as const) {
      const { up, relay, attach, ended } = setup();
      attach();
      relay.downstreamClosed(code, "r");
      expect(up.closedWith).toEqual([...expected]);
      expect(ended()).toBe(1);
    }
  });

  test("upstream closes: 1005 stays codeless (Bun's close(1005)); 1006 becomes terminate()", () => {
    for (const [code, expected] of [
      [4002, [4002, "r"]],
      [1005, [1005]],
      [1006, ["terminate"]],
    ] as const) {
      const { up, down, attach } = setup();
      attach();
      up.hangUp(code, "r");
      expect(down.closedWith).toEqual([...expected]);
    }
  });

  test("messages from a client after the upstream began closing are dropped, not sent", () => {
    const { up, relay, attach } = setup();
    attach();
    up.readyState = 2;
    relay.fromDownstream("late");
    expect(up.sent).toEqual([]);
  });

  test("going away closes both sides with 1001, once", () => {
    const { up, down, relay, attach, ended } = setup();
    attach();
    relay.fail(1001, "mesh: proxy draining");
    relay.downstreamClosed(1001, "mesh: proxy draining");
    expect(up.closedWith).toEqual([1001, "mesh: proxy draining"]);
    expect(down.closedWith).toEqual([1001, "mesh: proxy draining"]);
    expect(ended()).toBe(1);
  });
});
