/** The bench's parsers: HTTP/1.1 response framing (bench/load.ts), wrk's report, bench:alloc's heap counts, bench:profile's JITDump and samples. */
import { expect, test } from "bun:test";
import { ResponseReader } from "./http1-reader.ts";
import { parseWrk } from "./wrk.ts";
import { CENSUS_MARK, censusOf, hasCount, KEPT_MARK, keptOf } from "./alloc/census.ts";
import { attribute } from "./profile/attribute.ts";
import { readJitDump, regionAt } from "./profile/jitdump.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

test("responses framed by Content-Length and by chunks, split anywhere", () => {
  const stream =
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" +
    "HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n" +
    "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
  for (const size of [1, 2, 7, stream.length]) {
    const reader = new ResponseReader();
    const ends = [];
    for (let i = 0; i < stream.length; i += size) ends.push(...reader.push(bytes(stream.slice(i, i + size))));
    expect(ends).toEqual([
      { status: 200, close: false },
      { status: 502, close: false },
      { status: 204, close: true },
    ]);
  }
});

test("bytes that are not an HTTP response are refused", () => {
  expect(() => new ResponseReader().push(bytes("SSH-2.0-x\r\n\r\n"))).toThrow();
  expect(() => new ResponseReader().push(bytes("HTTP/1.1 200 OK\r\n\r\n"))).toThrow(/framing/);
});

test("wrk's report with latency distribution and errors", () => {
  const r = parseWrk(`Running 5s test @ http://127.0.0.1:1/
  1 threads and 32 connections
  Latency Distribution
     50%  612.00us
     75%  700.00us
     90%    1.01ms
     99%    2.50ms
  123456 requests in 5.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  24691.20
`);
  expect(r).toEqual({ requests: 123456, durationS: 5, reqPerSec: 24691.2, p50Ms: 0.612, p99Ms: 2.5, errors: 3, non2xx: 4 });
});

test("heap counts: cells per request, less what counting itself allocated; collections between the first two counts are reported", () => {
  let n = 0;
  const count = (counts: Record<string, number>) => `${CENSUS_MARK}${++n} ${JSON.stringify(counts)}`;
  const gc = "[GC<0x3444181c118>: START M 9765kb => EdenCollection, a=0kb";
  const stderr = [
    "[GC<0x1>: START M 1kb => EdenCollection", // before the counts: ignored
    count({ Object: 100, string: 50 }),
    count({ Object: 1100, string: 850, Array: 200 }),
    count({ Object: 1110, string: 850, Array: 200, Structure: 30 }),
    gc, // after: ignored
  ].join("\n");
  const c = censusOf(stderr, 100);
  expect(c.perRequest).toEqual([["Object", 9.9], ["string", 8], ["Array", 2]]);
  expect(c.collections).toBe(0);
  expect(hasCount(stderr, 3)).toBe(true);
  expect(hasCount(stderr, 4)).toBe(false);
  const withGc = censusOf([count({ Object: 1 }), gc, count({ Object: 2 }), count({ Object: 2 })].join("\n"), 1);
  expect(withGc.collections).toBe(1);
  expect(() => censusOf(count({ Object: 1 }), 1)).toThrow(/3 heap counts/);
});

test("kept by a young collection: the last bytes-visited figure of the eden collection between the marks", () => {
  const eden = (kb: number) =>
    `[GC<0x1>: START M 9765kb => EdenCollection, a=0kb hf=0.000 mu=0.600 v=0kb (C:0 M:0) o=7 b=3 i#1:N<CsMsrShDMsm(5)SrbBcs> 0+5 v=${kb - 1}kb (C:1 M:0) i#2:N<WsOJw>Pbc 0+0 v=${kb}kb (C:1 M:0) => 6073kb, p=0.3ms (max 0.5), cycle 0.3ms END]`;
  const full = "[GC<0x1>: START M 9765kb => FullCollection, a=0kb v=0kb (C:0 M:0) i#1:N<Cs> 0+5 v=6000kb (C:1 M:0) => 6073kb, p=2ms END]";
  expect(keptOf([eden(900), full, `${KEPT_MARK}start`, eden(55), `${KEPT_MARK}end`].join("\n"))).toBe(55);
  // The latest pair of marks counts; a collection outside them does not.
  expect(keptOf([`${KEPT_MARK}start`, eden(55), `${KEPT_MARK}end`, full, `${KEPT_MARK}start`, eden(2), `${KEPT_MARK}end`, eden(700)].join("\n"))).toBe(2);
  expect(keptOf(`${KEPT_MARK}start\n${eden(3)}`)).toBeUndefined();
  expect(keptOf(`${KEPT_MARK}start\n${KEPT_MARK}end`)).toBeUndefined();
});

/** A JITDump as JavaScriptCore writes it: a 40-byte header, then JIT_CODE_LOAD records (and others, skipped). */
function jitDump(code: { addr: number; size: number; name: string }[]): Uint8Array {
  const parts: Buffer[] = [];
  const header = Buffer.alloc(40);
  header.writeUInt32LE(0x4a695444, 0);
  header.writeUInt32LE(1, 4);
  header.writeUInt32LE(40, 8);
  parts.push(header);
  const other = Buffer.alloc(24);
  other.writeUInt32LE(3, 0); // JIT_CODE_DEBUG_INFO, say: skipped
  other.writeUInt32LE(24, 4);
  parts.push(other);
  for (const c of code) {
    const name = Buffer.from(`${c.name}\0`);
    const rec = Buffer.alloc(16 + 40 + name.length + 4);
    rec.writeUInt32LE(0, 0);
    rec.writeUInt32LE(rec.length, 4);
    rec.writeBigUInt64LE(BigInt(c.addr), 16 + 16);
    rec.writeBigUInt64LE(BigInt(c.size), 16 + 24);
    name.copy(rec, 16 + 40);
    parts.push(rec);
  }
  return new Uint8Array(Buffer.concat(parts));
}

test("JITDump: code regions by address; samples split by place and named by their JavaScript", () => {
  const regions = readJitDump(jitDump([{ addr: 0x2000, size: 0x100, name: "JSC-FTL: onData#Bbn3qc" }, { addr: 0x1000, size: 0x80, name: "JSC-FTLThunk: unspecified" }]));
  expect(regions.map((r) => r.name)).toEqual(["JSC-FTLThunk: unspecified", "JSC-FTL: onData#Bbn3qc"]);
  expect(regionAt(regions, 0x20ff)?.name).toBe("JSC-FTL: onData#Bbn3qc");
  expect(regionAt(regions, 0x2100)).toBeUndefined();
  expect(() => readJitDump(new Uint8Array(64))).toThrow(/JiTD/);
  const script = [
    "\t    2010 [unknown] ([unknown])\n\t    5000 main (/x/mesh)", // in JIT code
    "\tffffffff81000000 tcp_sendmsg ([kernel.kallsyms])\n\t    7000 [unknown] (/x/mesh)\n\t    1010 [unknown] ([unknown])\n\t    2020 [unknown] ([unknown])", // kernel, via a thunk, from onData
    "\t    7000 [unknown] (/x/mesh)\n\t    6000 [unknown] (/x/mesh)", // runtime, no JavaScript below
  ].join("\n\n");
  const a = attribute(script, regions);
  expect(a.samples).toBe(3);
  expect(Object.fromEntries(a.byPlace)).toEqual({ "JIT code": 1, "kernel, called from JavaScript": 1, "runtime, no JavaScript below": 1 });
  expect(Object.fromEntries(a.jitSelf)).toEqual({ "onData (FTL)": 1 });
  expect(Object.fromEntries(a.nativeByCaller)).toEqual({ "onData (FTL)": 1 });
});
