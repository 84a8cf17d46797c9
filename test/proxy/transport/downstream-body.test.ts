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
