import { describe, expect, test } from "bun:test";
import { DownstreamBody } from "../../../src/proxy/transport/h1-server/request-body.ts";

const reader = () => ({ paused: 0, pauseReading() { this.paused++; }, resumeReading() { this.paused--; } });

describe("DownstreamBody.takeWhole: a small body that is all here goes out with its head", () => {
  test("hands over the whole body after `room` bytes, from ranges of several reads, once", async () => {
    const body = new DownstreamBody(reader(), 10, false, 1 << 20);
    const first = Buffer.from("HEAD0123");
    expect(body.feed(first, 4, first.length)).toBe(4);
    expect(body.takeWhole(10, 3)).toBeUndefined(); // not all here yet: nothing changes
    const second = Buffer.from("456789NEXT");
    expect(body.feed(second)).toBe(6);
    const out = body.takeWhole(10, 3)!;
    expect(out.length).toBe(13);
    expect(out.subarray(3).toString()).toBe("0123456789");
    expect(body.takeWhole(10, 3)).toBeUndefined();
    await expect(body.pump({ kind: "length", length: 10 }, { write: () => true, drained: async () => true, live: () => true })).rejects.toThrow(/already sent/);
  });

  test("refuses a length other than what arrived, or a body over the prebuffer; a complete chunked body is its decoded bytes", () => {
    const body = new DownstreamBody(reader(), 3, false, 1 << 20);
    body.feed(Buffer.from("abc"));
    expect(body.takeWhole(4, 0)).toBeUndefined();
    const chunked = new DownstreamBody(reader(), -1, true, 1 << 20);
    chunked.feed(Buffer.from("3\r\nabc\r\n0\r\n\r\n"));
    expect(chunked.done).toBe(true);
    expect(chunked.takeWhole(3, 0)?.toString()).toBe("abc");
    const big = new DownstreamBody(reader(), 70_000, false, 1 << 20);
    big.feed(Buffer.alloc(70_000));
    expect(big.takeWhole(70_000, 0)).toBeUndefined();
  });
});

describe("DownstreamBody before its pump: what waits costs about its own size", () => {
  test("a body in 4,000 one-byte pieces, each a view of a 16 KiB buffer of its own, keeps well under 1 MiB alive, and goes out whole and in order", async () => {
    const arrayBuffers = () => {
      Bun.gc(true);
      return process.memoryUsage().arrayBuffers;
    };
    const N = 4000;
    const body = new DownstreamBody(reader(), N, false, 1 << 20);
    const base = arrayBuffers();
    for (let i = 0; i < N; i++) {
      // As a mux stream hands on a peer's one-byte frame: a view of a slab, the rest of which was other streams' bytes.
      const slab = Buffer.alloc(16 * 1024);
      slab[100] = 0x61 + (i % 26);
      body.feed(slab.subarray(100, 101));
    }
    const growth = arrayBuffers() - base;
    expect(growth).toBeLessThan(1 << 20);
    const sent: Buffer[] = [];
    const complete = await body.pump({ kind: "length", length: N }, { write: (d, s = 0, e) => (sent.push(typeof d === "string" ? Buffer.from(d, "latin1") : Buffer.from(d.subarray(s, e ?? d.byteLength))), true), drained: async () => true, live: () => true });
    expect(complete).toBe(true);
    const out = Buffer.concat(sent);
    expect(out.length).toBe(N);
    expect([...out].every((b, i) => b === 0x61 + (i % 26))).toBe(true);
  });
});
