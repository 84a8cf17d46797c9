/**
 * HPACK codec (src/proxy/h2/wire): RFC 7541 Appendix C examples, the Huffman code, the
 * faults a peer can send, the encoder's round trip, and a real HTTP/2 server (Bun's
 * node:http2) reading our blocks and answering with blocks our decoder reads.
 */
import { describe, expect, test } from "bun:test";
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import net, { type AddressInfo } from "node:net";
import { HpackDecoder, HpackEncoder, HpackError, STATIC_TABLE } from "../../../src/proxy/h2/wire/hpack.ts";
import { EOS, HUFFMAN_CODE, huffmanDecode } from "../../../src/proxy/h2/wire/huffman.ts";
import { F, frame, frameReader, PREFACE, T } from "../../helpers/raw-h2.ts";

function hex(text: string): Uint8Array {
  return Buffer.from(text.replace(/\s+/g, ""), "hex");
}

/** Flat [name, value, …] from pairs, for readable expectations. */
function flat(...pairs: [string, string][]): string[] {
  return pairs.flat();
}

/**
 * The decoder's dynamic table, newest first, read by decoding an indexed field for each
 * index past the static table until one is refused (indexed fields change nothing).
 */
function dynamicEntries(decoder: HpackDecoder): [string, string][] {
  const entries: [string, string][] = [];
  for (let index = STATIC_TABLE.length + 1; ; index++) {
    let field: string[];
    try {
      field = decoder.decode(Uint8Array.from(integerOctets(0x80, 7, index)));
    } catch (error) {
      expect(error).toBeInstanceOf(HpackError);
      return entries;
    }
    entries.push([field[0]!, field[1]!]);
  }
}

function tableSize(entries: [string, string][]): number {
  return entries.reduce((size, [name, value]) => size + name.length + value.length + 32, 0);
}

/** A literal-with-indexing block with a new name (short strings): what HpackEncoder never sends. */
function literalWithIndexing(name: string, value: string): Uint8Array {
  const string = (text: string) => Buffer.concat([Buffer.from([text.length]), Buffer.from(text, "latin1")]);
  return Buffer.concat([Buffer.from([0x40]), string(name), string(value)]);
}

/** RFC 7541 §5.1 integer octets, `flags` above an N-bit prefix. */
function integerOctets(flags: number, prefixBits: number, value: number): number[] {
  const prefixMax = 2 ** prefixBits - 1;
  if (value < prefixMax) return [flags | value];
  const octets = [flags | prefixMax];
  for (value -= prefixMax; value >= 128; value = Math.floor(value / 128)) octets.push((value % 128) | 0x80);
  return [...octets, value];
}

function expectHpackError(run: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(HpackError);
  expect((caught as Error).message).toMatch(message);
}

describe("RFC 7541 C.2: header field representations", () => {
  test("C.2.1 literal with indexing enters the dynamic table", () => {
    const decoder = new HpackDecoder();
    const block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    expect(decoder.decode(block)).toEqual(flat(["custom-key", "custom-header"]));
    expect(dynamicEntries(decoder)).toEqual([["custom-key", "custom-header"]]);
    expect(tableSize(dynamicEntries(decoder))).toBe(55);
  });

  test("C.2.2 literal without indexing leaves the table empty", () => {
    const decoder = new HpackDecoder();
    expect(decoder.decode(hex("040c 2f73 616d 706c 652f 7061 7468"))).toEqual(flat([":path", "/sample/path"]));
    expect(dynamicEntries(decoder)).toEqual([]);
  });

  test("C.2.3 never-indexed literal leaves the table empty", () => {
    const decoder = new HpackDecoder();
    const block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
    expect(decoder.decode(block)).toEqual(flat(["password", "secret"]));
    expect(dynamicEntries(decoder)).toEqual([]);
  });

  test("C.2.4 indexed field from the static table", () => {
    const decoder = new HpackDecoder();
    expect(decoder.decode(hex("82"))).toEqual(flat([":method", "GET"]));
    expect(dynamicEntries(decoder)).toEqual([]);
  });
});

const REQUEST_1 = flat([":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "www.example.com"]);
const REQUEST_2 = [...REQUEST_1, "cache-control", "no-cache"];
const REQUEST_3 = flat(
  [":method", "GET"],
  [":scheme", "https"],
  [":path", "/index.html"],
  [":authority", "www.example.com"],
  ["custom-key", "custom-value"],
);
const REQUEST_TABLES: [string, string][][] = [
  [[":authority", "www.example.com"]],
  [
    ["cache-control", "no-cache"],
    [":authority", "www.example.com"],
  ],
  [
    ["custom-key", "custom-value"],
    ["cache-control", "no-cache"],
    [":authority", "www.example.com"],
  ],
];
const REQUEST_TABLE_SIZES = [57, 110, 164];

function decodeRequestSequence(blocks: Uint8Array[]): void {
  const decoder = new HpackDecoder();
  const expected = [REQUEST_1, REQUEST_2, REQUEST_3];
  blocks.forEach((block, i) => {
    expect(decoder.decode(block)).toEqual(expected[i]!);
    expect(dynamicEntries(decoder)).toEqual(REQUEST_TABLES[i]!);
    expect(tableSize(dynamicEntries(decoder))).toBe(REQUEST_TABLE_SIZES[i]!);
  });
}

describe("RFC 7541 C.3/C.4: requests on one connection", () => {
  test("C.3 without Huffman coding", () => {
    decodeRequestSequence([
      hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
      hex("8286 84be 5808 6e6f 2d63 6163 6865"),
      hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"),
    ]);
  });

  test("C.4 with Huffman coding", () => {
    decodeRequestSequence([
      hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
      hex("8286 84be 5886 a8eb 1064 9cbf"),
      hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
    ]);
  });
});

const DATE_1 = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE_2 = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOCATION = "https://www.example.com";
const COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const RESPONSES = [
  flat([":status", "302"], ["cache-control", "private"], ["date", DATE_1], ["location", LOCATION]),
  flat([":status", "307"], ["cache-control", "private"], ["date", DATE_1], ["location", LOCATION]),
  flat(
    [":status", "200"],
    ["cache-control", "private"],
    ["date", DATE_2],
    ["location", LOCATION],
    ["content-encoding", "gzip"],
    ["set-cookie", COOKIE],
  ),
];
// Each block's later indexed references (c1, c0, bf) only come out right after the
// evictions that a 256-octet table forces.
const RESPONSE_TABLES: [string, string][][] = [
  [
    ["location", LOCATION],
    ["date", DATE_1],
    ["cache-control", "private"],
    [":status", "302"],
  ],
  [
    [":status", "307"],
    ["location", LOCATION],
    ["date", DATE_1],
    ["cache-control", "private"],
  ],
  [
    ["set-cookie", COOKIE],
    ["content-encoding", "gzip"],
    ["date", DATE_2],
  ],
];
const RESPONSE_TABLE_SIZES = [222, 222, 215];

function decodeResponseSequence(blocks: Uint8Array[]): void {
  const decoder = new HpackDecoder(256);
  blocks.forEach((block, i) => {
    expect(decoder.decode(block)).toEqual(RESPONSES[i]!);
    expect(dynamicEntries(decoder)).toEqual(RESPONSE_TABLES[i]!);
    expect(tableSize(dynamicEntries(decoder))).toBe(RESPONSE_TABLE_SIZES[i]!);
  });
}

describe("RFC 7541 C.5/C.6: responses evicting from a 256-octet table", () => {
  test("C.5 without Huffman coding", () => {
    decodeResponseSequence([
      hex(`4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
           2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
           6c65 2e63 6f6d`),
      hex("4803 3330 37c1 c0bf"),
      hex(`88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
           54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
           5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
           3d31`),
    ]);
  });

  test("C.6 with Huffman coding", () => {
    decodeResponseSequence([
      hex(`4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
           2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`),
      hex("4883 640e ffc1 c0bf"),
      hex(`88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
           77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
           9587 3160 65c0 03ed 4ee5 b106 3d50 07`),
    ]);
  });
});

/** A test-only Huffman encoder built from the same Appendix B table, padding with 1s. */
function huffmanEncode(octets: Uint8Array): Uint8Array {
  const bits: number[] = [];
  for (const octet of octets) {
    const code = HUFFMAN_CODE[octet * 2]!;
    const length = HUFFMAN_CODE[octet * 2 + 1]!;
    for (let i = length - 1; i >= 0; i--) bits.push(Math.floor(code / 2 ** i) & 1);
  }
  while (bits.length % 8) bits.push(1);
  const out = new Uint8Array(bits.length / 8);
  bits.forEach((bit, i) => (out[i >> 3]! |= bit << (7 - (i & 7))));
  return out;
}

function decodeAll(coded: Uint8Array): string {
  return huffmanDecode(coded, 0, coded.byteLength);
}

/** A seeded generator, so a failing random case can be replayed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

describe("Huffman code", () => {
  test("the table is a complete canonical prefix code (RFC 7541 Appendix B)", () => {
    const symbols = Array.from({ length: EOS + 1 }, (_, symbol) => symbol);
    const lengthOf = (symbol: number) => HUFFMAN_CODE[symbol * 2 + 1]!;
    symbols.sort((a, b) => lengthOf(a) - lengthOf(b) || a - b);
    let next = 0;
    let previousLength = lengthOf(symbols[0]!);
    for (const symbol of symbols) {
      next *= 2 ** (lengthOf(symbol) - previousLength);
      previousLength = lengthOf(symbol);
      expect(HUFFMAN_CODE[symbol * 2]).toBe(next++);
    }
    expect(next).toBe(2 ** 30); // every 30-bit pattern is covered: Kraft sum is exactly 1
    expect(HUFFMAN_CODE[EOS * 2]).toBe(2 ** 30 - 1);
  });

  test("every octet 0–255 round trips, alone and all together", () => {
    const all = new Uint8Array(256).map((_, i) => i);
    for (const octet of all) expect(decodeAll(huffmanEncode(Uint8Array.of(octet)))).toBe(String.fromCharCode(octet));
    expect(decodeAll(huffmanEncode(all))).toBe(Buffer.from(all).toString("latin1"));
  });

  test("random strings round trip", () => {
    const random = seededRandom(7541);
    for (let run = 0; run < 2000; run++) {
      const octets = new Uint8Array(Math.floor(random() * 80));
      const printable = random() < 0.7; // mostly header-like text, where codes are short
      for (let i = 0; i < octets.length; i++) {
        octets[i] = printable ? 32 + Math.floor(random() * 95) : Math.floor(random() * 256);
      }
      expect(decodeAll(huffmanEncode(octets))).toBe(Buffer.from(octets).toString("latin1"));
    }
  });

  test("a long string (past the decoder's first scratch buffer)", () => {
    const text = "grpc-".repeat(4000);
    expect(decodeAll(huffmanEncode(Buffer.from(text)))).toBe(text);
    expect(decodeAll(huffmanEncode(Buffer.from("short")))).toBe("short");
  });

  test("decodes a range inside a larger buffer, and the empty string", () => {
    const coded = huffmanEncode(Buffer.from("www.example.com"));
    const framed = Buffer.concat([Buffer.from([1, 2, 3]), coded, Buffer.from([4])]);
    expect(huffmanDecode(framed, 3, 3 + coded.byteLength)).toBe("www.example.com");
    expect(huffmanDecode(framed, 2, 2)).toBe("");
  });

  test("padding of 8 bits or more is refused", () => {
    expectHpackError(() => decodeAll(Uint8Array.of(0xff)), /padding longer than 7 bits/);
    // "a" is 00011: 3 bits of padding, then a whole octet more of 1s
    expectHpackError(() => decodeAll(Uint8Array.of(0x1f, 0xff)), /padding longer than 7 bits/);
    expect(decodeAll(Uint8Array.of(0x1f))).toBe("a");
  });

  test("padding that is not all 1s is refused", () => {
    expectHpackError(() => decodeAll(Uint8Array.of(0x18)), /not a prefix of EOS/); // 00011 000
    expectHpackError(() => decodeAll(Uint8Array.of(0x1d)), /not a prefix of EOS/); // 00011 101
  });

  test("EOS inside the string is refused", () => {
    expectHpackError(() => decodeAll(Uint8Array.of(0xff, 0xff, 0xff, 0xff)), /EOS symbol inside/);
    // "a", EOS (30 ones), "a": 40 bits, so no padding
    const bits = "00011" + "1".repeat(30) + "00011";
    const octets = Uint8Array.from(bits.match(/.{8}/g)!, (octet) => parseInt(octet, 2));
    expectHpackError(() => decodeAll(octets), /EOS symbol inside/);
  });
});

describe("HpackDecoder faults", () => {
  test("index 0", () => {
    expectHpackError(() => new HpackDecoder().decode(hex("80")), /index 0/);
  });

  test("index past the table names both parts", () => {
    expectHpackError(() => new HpackDecoder().decode(hex("be")), /index 62 is past the table \(61 static \+ 0 dynamic\)/);
    const decoder = new HpackDecoder();
    decoder.decode(hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"));
    decoder.decode(hex("8286 84be 5808 6e6f 2d63 6163 6865"));
    decoder.decode(hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"));
    expectHpackError(() => decoder.decode(hex("c6")), /^HPACK: index 70 is past the table \(61 static \+ 3 dynamic\)$/);
    // A literal's indexed name is checked the same way.
    expectHpackError(() => decoder.decode(hex("7f07 0161")), /index 70 is past the table/);
  });

  test("integer overflow: past 2^31, or too many continuation octets", () => {
    expectHpackError(() => new HpackDecoder().decode(hex("ffff ffff ff0f")), /integer overflow/);
    expectHpackError(() => new HpackDecoder().decode(hex("ff80 8080 8080 01")), /integer overflow: more than 5/);
    // As a string length (7-bit prefix): 2^31 - 1 is an integer, just too long a string.
    const literal = (length: number) => Uint8Array.from([0x00, ...integerOctets(0x00, 7, length)]);
    expectHpackError(() => new HpackDecoder().decode(literal(2 ** 31 - 1)), /string of 2147483647 octets runs past/);
    expectHpackError(() => new HpackDecoder().decode(literal(2 ** 31)), /integer overflow: 2147483648 is past 2\^31 - 1/);
  });

  test("string running past the end of the block", () => {
    expectHpackError(
      () => new HpackDecoder().decode(hex("400a 61")),
      /string of 10 octets runs past the end of the block \(1 left\)/,
    );
    // The block's end is the caller's `end`, not the buffer's.
    const buffer = hex("0003 6162 6301 78");
    expect(new HpackDecoder().decode(buffer)).toEqual(["abc", "x"]);
    expectHpackError(() => new HpackDecoder().decode(buffer, 0, 4), /runs past the end/);
  });

  test("size update above the advertised maximum", () => {
    expect(new HpackDecoder().decode(hex("3fe1 1f"))).toEqual([]); // 4096: allowed
    expectHpackError(() => new HpackDecoder().decode(hex("3fe2 1f")), /size update to 4097 is above the maximum 4096/);
    expectHpackError(() => new HpackDecoder(0).decode(hex("21")), /size update to 1 is above the maximum 0/);
  });

  test("size update after a field", () => {
    expectHpackError(() => new HpackDecoder().decode(hex("8220")), /size update after a header field/);
  });

  test("two size updates are allowed, three in a row are not", () => {
    expect(new HpackDecoder().decode(hex("203f e11f 82"))).toEqual([":method", "GET"]);
    expectHpackError(() => new HpackDecoder().decode(hex("2020 20")), /more than two dynamic table size updates/);
  });

  test("a size update evicts, and 0 empties the table", () => {
    const decoder = new HpackDecoder();
    decoder.decode(hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"));
    decoder.decode(hex("4001 6101 62")); // a: b, 34 octets
    expect(dynamicEntries(decoder)).toEqual([["a", "b"], ["custom-key", "custom-header"]]);
    decoder.decode(hex("3f03")); // 34
    expect(dynamicEntries(decoder)).toEqual([["a", "b"]]);
    decoder.decode(hex("20"));
    expect(dynamicEntries(decoder)).toEqual([]);
  });

  test("an entry larger than the table empties it and is not inserted", () => {
    const decoder = new HpackDecoder(64);
    decoder.decode(hex("4001 6101 62"));
    const big = Buffer.concat([hex("4001 6120"), Buffer.alloc(32, 0x7a)]); // a: z×32, 65 octets
    expect(decoder.decode(big)).toEqual(["a", "z".repeat(32)]);
    expect(dynamicEntries(decoder)).toEqual([]);
  });

  test("truncated block", () => {
    expectHpackError(() => new HpackDecoder().decode(hex("ff")), /truncated block: it ends inside an integer/);
    expectHpackError(() => new HpackDecoder().decode(hex("41")), /truncated block: it ends before a string/);
    expectHpackError(() => new HpackDecoder().decode(hex("40")), /truncated block: it ends before a string/);
    expectHpackError(() => new HpackDecoder().decode(hex("4001 61")), /truncated block: it ends before a string/);
  });

  test("Huffman faults inside a block are HpackErrors", () => {
    expectHpackError(() => new HpackDecoder().decode(hex("0081 ff")), /padding longer than 7 bits/);
  });
});

describe("HpackDecoder results", () => {
  test("listBytes is the header list size of the last block", () => {
    const decoder = new HpackDecoder();
    expect(decoder.listBytes).toBe(0);
    decoder.decode(hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"));
    // :method GET 42, :scheme http 43, :path / 38, :authority www.example.com 57
    expect(decoder.listBytes).toBe(180);
    decoder.decode(hex("8286 84be 5808 6e6f 2d63 6163 6865"));
    expect(decoder.listBytes).toBe(180 + 13 + 8 + 32);
    decoder.decode(hex(""));
    expect(decoder.listBytes).toBe(0);
  });

  test("octets come back as received: upper case and 0x80–0xff are not touched", () => {
    const block = hex("0003 4162 6303 e4ff 80");
    expect(new HpackDecoder().decode(block)).toEqual(["Abc", "\u00e4\u00ff\u0080"]);
  });

  test("the dynamic table grows past its first ring and keeps its order", () => {
    const decoder = new HpackDecoder(65536);
    const names = Array.from({ length: 100 }, (_, i) => `n${i}`);
    for (const name of names) decoder.decode(literalWithIndexing(name, `v-${name}`));
    const entries = dynamicEntries(decoder);
    expect(entries.length).toBe(100);
    expect(entries[0]).toEqual(["n99", "v-n99"]);
    expect(entries[99]).toEqual(["n0", "v-n0"]);
  });

  test("insertions and evictions that wrap the ring match a simple model", () => {
    const decoder = new HpackDecoder(3000);
    const random = seededRandom(9);
    let model: [string, string][] = []; // newest first
    for (let i = 0; i < 400; i++) {
      const entry: [string, string] = [`name-${i}`, "v".repeat(Math.floor(random() * 60))];
      decoder.decode(literalWithIndexing(...entry));
      model.unshift(entry);
      while (tableSize(model) > 3000) model.pop();
      if (i % 50 === 49) expect(dynamicEntries(decoder)).toEqual(model);
    }
    // Shrink, then grow back: the ring keeps the newest entries in order.
    decoder.decode(hex("3f e1 07")); // 1024
    while (tableSize(model) > 1024) model.pop();
    expect(dynamicEntries(decoder)).toEqual(model);
    for (let i = 0; i < 60; i++) {
      const entry: [string, string] = [`again-${i}`, "w".repeat(i)];
      decoder.decode(literalWithIndexing(...entry));
      model.unshift(entry);
      while (tableSize(model) > 1024) model.pop();
    }
    expect(dynamicEntries(decoder)).toEqual(model);
  });
});

describe("HpackEncoder", () => {
  function roundTrip(fields: string[]): void {
    const block = new HpackEncoder().encode(fields);
    expect(new HpackDecoder().decode(block)).toEqual(fields);
  }

  test("pseudo-headers and static names", () => {
    roundTrip(flat([":method", "POST"], [":scheme", "https"], [":path", "/pkg.Service/Method"], [":authority", "svc:50051"]));
    roundTrip(flat([":status", "200"], ["content-type", "application/grpc"], ["grpc-encoding", "identity"]));
  });

  test("unknown names, empty values and repeated names", () => {
    roundTrip(flat(["x-custom", ""], ["grpc-status", "0"], ["grpc-message", ""], ["set-cookie", "a=1"], ["set-cookie", "b=2"]));
  });

  test("long values need multi-octet lengths (> 127 and > 16383 octets)", () => {
    roundTrip(flat(["x-long", "a".repeat(128)], ["x-exact", "b".repeat(127)]));
    roundTrip(flat(["x-longer", "c".repeat(16384)], ["x-name-".padEnd(300, "n"), "d"]));
    roundTrip(flat(["x-huge", "e".repeat(200_000)]));
  });

  test("octets 0x80–0xff in values go as latin1", () => {
    const high = Array.from({ length: 128 }, (_, i) => String.fromCharCode(0x80 + i)).join("");
    roundTrip(flat(["x-high", high], ["x-mixed", "value-\u00e4"]));
    const block = new HpackEncoder().encode(["x-a", "\u00e4"]);
    expect([...block.subarray(-2)]).toEqual([0x01, 0xe4]);
  });

  test("only the first block starts with a table size update to 0", () => {
    const encoder = new HpackEncoder();
    const first = encoder.encode([":status", "200"]);
    const second = encoder.encode([":status", "200"]);
    expect([...first]).toEqual([0x20, 0x88]);
    expect([...second]).toEqual([0x88]);
    expect(new HpackDecoder(0).decode(first)).toEqual([":status", "200"]);
  });

  test("exact static pairs are one indexed octet; others a literal with the static name", () => {
    const encoder = new HpackEncoder();
    encoder.encode([]);
    expect([...encoder.encode([":method", "GET", ":path", "/", ":scheme", "https"])]).toEqual([0x82, 0x84, 0x87]);
    // :status 201 is not in the table: literal without indexing, name index 8 (0000 1000)
    expect([...encoder.encode([":status", "201"])]).toEqual([0x08, 0x03, 0x32, 0x30, 0x31]);
    // content-type is index 31 (past the 4-bit prefix: 0f 10)
    expect([...encoder.encode(["content-type", "a"])]).toEqual([0x0f, 0x10, 0x01, 0x61]);
    // a new name: 00, then the name as a string
    expect([...encoder.encode(["te", "trailers"])]).toEqual([0x00, 0x02, 0x74, 0x65, 0x08, ...Buffer.from("trailers")]);
  });

  test("each block is its own memory: a later encode leaves earlier blocks alone", () => {
    const encoder = new HpackEncoder();
    const first = encoder.encode(["x-a", "first"]);
    const copy = Buffer.from(first);
    encoder.encode(["x-b", "second, and longer"]);
    encoder.encode(["x-c", "z".repeat(20_000)]); // past the shared scratch: a Buffer of its own
    expect(first).toEqual(copy);
  });

  test("an odd-length list is a programming error", () => {
    expect(() => new HpackEncoder().encode([":status"])).toThrow(/pairs/);
  });

  test("blocks never touch the decoder's dynamic table", () => {
    const encoder = new HpackEncoder();
    const decoder = new HpackDecoder();
    for (let i = 0; i < 3; i++) decoder.decode(encoder.encode(["x-a", `${i}`, ":path", `/p${i}`]));
    expect(dynamicEntries(decoder)).toEqual([]);
  });
});

describe("interop with Bun's node:http2", () => {
  const PADDED = 0x8;
  const PRIORITY = 0x20;

  /** The header block fragment of a HEADERS frame, without padding and priority. */
  function headersFragment(flags: number, payload: Buffer): Buffer {
    let start = 0;
    let end = payload.byteLength;
    if (flags & PADDED) end -= payload[start++]!;
    if (flags & PRIORITY) start += 5;
    return payload.subarray(start, end);
  }

  /** Reads frames, acknowledges SETTINGS, and decodes each response head in arrival order. */
  interface ResponseHead {
    fields: string[];
    blockBytes: number;
  }

  function readResponseHeads(socket: net.Socket, streams: number): Promise<Map<number, ResponseHead>> {
    const decoder = new HpackDecoder();
    const heads = new Map<number, ResponseHead>();
    let block: { streamId: number; fragments: Buffer[] } | undefined;
    return new Promise((resolve, reject) => {
      socket.on("error", reject);
      socket.on(
        "data",
        frameReader(false, (type, flags, streamId, payload) => {
          if (type === T.SETTINGS && !(flags & F.ACK)) socket.write(frame(T.SETTINGS, F.ACK, 0));
          if (type === T.HEADERS) block = { streamId, fragments: [headersFragment(flags, payload)] };
          if (type === T.CONTINUATION) block?.fragments.push(payload);
          if ((type === T.HEADERS || type === T.CONTINUATION) && flags & F.END_HEADERS && block) {
            const headerBlock = Buffer.concat(block.fragments);
            heads.set(block.streamId, { fields: decoder.decode(headerBlock), blockBytes: headerBlock.byteLength });
            block = undefined;
            if (heads.size === streams) resolve(heads);
          }
        }),
      );
    });
  }

  function field(fields: string[], name: string): string | undefined {
    for (let i = 0; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
    return undefined;
  }

  test(
    "a real server reads our blocks, and we read its Huffman-coded, indexed ones",
    async () => {
      const server = http2.createServer();
      server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
        stream.respond({
          ":status": 200,
          "x-echo-path": String(headers[":path"]),
          "x-echo-custom": String(headers["x-custom"]),
        });
        stream.end();
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const socket = net.connect((server.address() as AddressInfo).port, "127.0.0.1");
      try {
        const heads = readResponseHeads(socket, 2);
        const encoder = new HpackEncoder();
        const request = (path: string) =>
          encoder.encode([":method", "GET", ":scheme", "http", ":path", path, ":authority", "a.test", "x-custom", "value-\u00e4"]);
        socket.write(PREFACE);
        socket.write(frame(T.SETTINGS, 0, 0));
        socket.write(frame(T.HEADERS, F.END_STREAM | F.END_HEADERS, 1, request("/x?y=1")));
        socket.write(frame(T.HEADERS, F.END_STREAM | F.END_HEADERS, 3, request("/x?y=2")));
        const responses = await heads;
        for (const [streamId, path] of [
          [1, "/x?y=1"],
          [3, "/x?y=2"],
        ] as const) {
          const head = responses.get(streamId)!.fields;
          expect(field(head, ":status")).toBe("200");
          expect(field(head, "x-echo-path")).toBe(path);
          expect(field(head, "x-echo-custom")).toBe("value-\u00e4");
        }
        // The second head refers to entries the first put in the server's dynamic table.
        expect(responses.get(3)!.blockBytes).toBeLessThan(responses.get(1)!.blockBytes / 2);
      } finally {
        socket.destroy();
        server.close();
      }
    },
    10_000,
  );
});

test("STATIC_TABLE is RFC 7541 Appendix A's 61 entries", () => {
  expect(STATIC_TABLE.length).toBe(61);
  expect(STATIC_TABLE[0]).toEqual([":authority", ""]);
  expect(STATIC_TABLE[7]).toEqual([":status", "200"]);
  expect(STATIC_TABLE[15]).toEqual(["accept-encoding", "gzip, deflate"]);
  expect(STATIC_TABLE[30]).toEqual(["content-type", ""]);
  expect(STATIC_TABLE[60]).toEqual(["www-authenticate", ""]);
});
