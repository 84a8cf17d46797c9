/**
 * Reads JavaScriptCore's JITDump (BUN_JSC_useJITDump=1): the address range and name of
 * every piece of JIT code, so perf samples in JIT code can be named. The format is
 * perf's (tools/perf/Documentation/jitdump-specification.txt): a header, then records;
 * only JIT_CODE_LOAD (id 0) matters here.
 */
export interface JitRegion {
  start: number;
  end: number;
  name: string;
}

const MAGIC = 0x4a695444; // "JiTD"
const CODE_LOAD = 0;

export function readJitDump(bytes: Uint8Array): JitRegion[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 40 || view.getUint32(0, true) !== MAGIC) throw new Error("not a JITDump file (no JiTD header)");
  const decoder = new TextDecoder();
  const regions: JitRegion[] = [];
  let off = view.getUint32(8, true); // the header's size
  while (off + 16 <= bytes.byteLength) {
    const id = view.getUint32(off, true);
    const size = view.getUint32(off + 4, true);
    if (size < 16 || off + size > bytes.byteLength) break; // a record cut short: the writer was still going
    if (id === CODE_LOAD) {
      // after id, size, timestamp: pid, tid (u32), vma, code_addr, code_size, code_index (u64), then the name
      const addr = Number(view.getBigUint64(off + 16 + 16, true));
      const length = Number(view.getBigUint64(off + 16 + 24, true));
      const nameAt = off + 16 + 40;
      const nameEnd = bytes.indexOf(0, nameAt);
      regions.push({ start: addr, end: addr + length, name: decoder.decode(bytes.subarray(nameAt, nameEnd < 0 ? off + size : nameEnd)) });
    }
    off += size;
  }
  return regions.sort((a, b) => a.start - b.start);
}

/** The region holding `address`, by binary search over sorted regions. */
export function regionAt(regions: readonly JitRegion[], address: number): JitRegion | undefined {
  let lo = 0;
  let hi = regions.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = regions[mid]!;
    if (address < r.start) hi = mid - 1;
    else if (address >= r.end) lo = mid + 1;
    else return r;
  }
  return undefined;
}
