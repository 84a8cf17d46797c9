/** mesh-tcp/1's frames between two sidecars: DATA and END, read from a stream cut anywhere, and what is not a frame. */
import { describe, expect, test } from "bun:test";
import { dataFrames, END_FRAME, FrameReader, MAX_FRAME_PAYLOAD } from "../../src/proxy/tcp/frames.ts";

function reader() {
  const seen = { data: [] as Buffer[], ends: 0, malformed: [] as string[] };
  const r = new FrameReader({
    data: (chunk, start, end) => void seen.data.push(Buffer.from(chunk.subarray(start, end))),
    end: () => void seen.ends++,
    malformed: (why) => void seen.malformed.push(why),
  });
  return { r, seen, text: () => Buffer.concat(seen.data).toString() };
}

describe("frames", () => {
  test("DATA then END, cut at every byte boundary, give back the bytes and one END", () => {
    const wire = Buffer.concat([dataFrames(Buffer.from("hello ")), dataFrames(Buffer.from("mesh")), END_FRAME]);
    for (let cut = 0; cut <= wire.length; cut++) {
      const { r, seen, text } = reader();
      r.push(wire.subarray(0, cut));
      r.push(wire.subarray(cut));
      expect({ cut, text: text(), ends: seen.ends, malformed: seen.malformed }).toEqual({ cut, text: "hello mesh", ends: 1, malformed: [] });
      expect(r.sawEnd).toBe(true);
    }
  });

  test("one byte at a time", () => {
    const wire = Buffer.concat([dataFrames(Buffer.from("abc")), END_FRAME]);
    const { r, seen, text } = reader();
    for (const b of wire) r.push(Uint8Array.of(b));
    expect({ text: text(), ends: seen.ends }).toEqual({ text: "abc", ends: 1 });
  });

  test("a chunk longer than one frame holds is split into several, and read back whole", () => {
    const big = new Uint8Array(MAX_FRAME_PAYLOAD + 10).map((_, i) => i & 0xff);
    const wire = dataFrames(big);
    expect(wire.byteLength).toBe(big.byteLength + 8);
    const { r, seen } = reader();
    r.push(wire);
    expect(Buffer.concat(seen.data).equals(Buffer.from(big))).toBe(true);
  });

  test("small frames of one read are handed on as one piece, in order with larger ones and before END", () => {
    const tiny = (text: string) => Buffer.concat([...text].map((c) => dataFrames(Buffer.from(c))));
    const large = Buffer.alloc(2000, "L");
    const { r, seen, text } = reader();
    r.push(Buffer.concat([tiny("abc"), dataFrames(large), tiny("de"), END_FRAME]));
    expect(seen.data.map((d) => d.toString())).toEqual(["abc", large.toString(), "de"]);
    expect(text()).toBe(`abc${large}de`);
    expect(seen.ends).toBe(1);
    // One small frame alone is handed on as a range of the read, not copied.
    const one = reader();
    one.r.push(tiny("x"));
    expect(one.seen.data.map((d) => d.toString())).toEqual(["x"]);
  });

  test("a peer's 4,000 one-byte frames in one read cost one hand-on, not 4,000", () => {
    const { r, seen, text } = reader();
    const bytes = Buffer.alloc(4000).map((_, i) => 97 + (i % 26));
    r.push(Buffer.concat([...bytes].map((b) => dataFrames(Uint8Array.of(b)))));
    expect(seen.data.length).toBe(1);
    expect(text()).toBe(bytes.toString());
  });

  test("bytes before a frame that is not one are handed on before it is refused", () => {
    const { r, seen, text } = reader();
    r.push(Buffer.concat([dataFrames(Buffer.from("a")), dataFrames(Buffer.from("b")), Uint8Array.of(7, 0, 0, 1, 65)]));
    expect({ text: text(), malformed: seen.malformed.length }).toEqual({ text: "ab", malformed: 1 });
  });

  test("what is not a frame is refused, and nothing after it is read", () => {
    const cases: [string, Uint8Array][] = [
      ["an unknown type", Uint8Array.of(7, 0, 0, 1, 65)],
      ["an empty DATA frame", Uint8Array.of(0, 0, 0, 0)],
      ["DATA after END", Buffer.concat([END_FRAME, dataFrames(Buffer.from("late"))])],
      ["END with a length", Uint8Array.of(1, 0, 0, 1, 65)],
    ];
    for (const [name, wire] of cases) {
      const { r, seen, text } = reader();
      r.push(Buffer.concat([wire, dataFrames(Buffer.from("after"))]));
      expect({ name, malformed: seen.malformed.length, text: text() }).toEqual({ name, malformed: 1, text: "" });
    }
  });

  test("a stream that stops inside a frame has not ended", () => {
    const { r, seen } = reader();
    r.push(dataFrames(Buffer.from("partial")).subarray(0, 6));
    expect({ ends: seen.ends, sawEnd: r.sawEnd }).toEqual({ ends: 0, sawEnd: false });
  });
});
