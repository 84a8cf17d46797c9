/**
 * HPACK (RFC 7541): header compression for mesh's own HTTP/2 implementation.
 *
 * The decoder keeps the peer's dynamic table in step with every header block on the
 * connection and hands back each block as a flat [name, value, …] list of latin1 strings,
 * exactly the octets received: checking names and values is the caller's job. The encoder
 * never indexes into a dynamic table (so it keeps no state a peer could make it grow):
 * exact static matches go as one index, everything else as a literal without indexing.
 */
import { HpackError } from "./hpack-error.ts";
import { huffmanDecode, latin1String } from "./huffman.ts";

export { HpackError };

/** RFC 7541 Appendix A. STATIC_TABLE[i - 1] is the entry at index i. */
export const STATIC_TABLE: readonly (readonly [name: string, value: string])[] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

const STATIC_COUNT = STATIC_TABLE.length;
/** Indexed by HPACK index (slot 0 unused), so a lookup is one array read. */
const STATIC_NAMES: readonly string[] = ["", ...STATIC_TABLE.map(([name]) => name)];
const STATIC_VALUES: readonly string[] = ["", ...STATIC_TABLE.map(([, value]) => value)];

/** RFC 7541 §4.1: an entry's size counts its name and value octets plus 32. */
const ENTRY_OVERHEAD = 32;
/** Integers past this are refused: no legitimate index, length or size comes near it. */
const MAX_INTEGER = 2 ** 31 - 1;
/** 2^31 needs 5 continuation octets after a prefix; more can only be padding or attack. */
const MAX_CONTINUATION_OCTETS = 5;
const EMPTY = new Uint8Array(0);

/**
 * The dynamic table (RFC 7541 §2.3.2) as a ring of name and value strings, newest entry
 * at relative index 0, so an indexed field hands back strings made when it was inserted.
 */
class DynamicTable {
  private names: string[] = new Array<string>(32).fill("");
  private values: string[] = new Array<string>(32).fill("");
  /** Slot of the newest entry; slots are taken modulo the (power of two) capacity. */
  private newest = -1;
  length = 0;
  size = 0;

  constructor(private maxSize: number) {}

  nameAt(relative: number): string {
    return this.names[(this.newest - relative) & (this.names.length - 1)]!;
  }

  valueAt(relative: number): string {
    return this.values[(this.newest - relative) & (this.values.length - 1)]!;
  }

  insert(name: string, value: string): void {
    const entrySize = name.length + value.length + ENTRY_OVERHEAD;
    // §4.4: an entry larger than the table empties it and is not inserted.
    this.evictDownTo(this.maxSize - entrySize);
    if (entrySize > this.maxSize) return;
    if (this.length === this.names.length) this.grow();
    this.newest = (this.newest + 1) & (this.names.length - 1);
    this.names[this.newest] = name;
    this.values[this.newest] = value;
    this.length++;
    this.size += entrySize;
  }

  resize(maxSize: number): void {
    this.maxSize = maxSize;
    this.evictDownTo(maxSize);
  }

  private evictDownTo(limit: number): void {
    const mask = this.names.length - 1;
    while (this.size > limit && this.length > 0) {
      const oldest = (this.newest - this.length + 1) & mask;
      this.size -= this.names[oldest]!.length + this.values[oldest]!.length + ENTRY_OVERHEAD;
      this.names[oldest] = "";
      this.values[oldest] = "";
      this.length--;
    }
  }

  private grow(): void {
    const names = new Array<string>(this.names.length * 2).fill("");
    const values = new Array<string>(this.values.length * 2).fill("");
    for (let i = 0; i < this.length; i++) {
      names[this.length - 1 - i] = this.nameAt(i);
      values[this.length - 1 - i] = this.valueAt(i);
    }
    this.names = names;
    this.values = values;
    this.newest = this.length - 1;
  }
}

/** Decodes the header blocks of one connection's direction, in the order they came. */
export class HpackDecoder {
  private readonly table: DynamicTable;
  private lastListBytes = 0;
  // The block being decoded and the read position, as fields so no call returns a pair.
  private block: Uint8Array = EMPTY;
  private pos = 0;
  private end = 0;

  /** maxTableSize: the SETTINGS_HEADER_TABLE_SIZE we advertise. */
  constructor(private readonly maxTableSize = 4096) {
    this.table = new DynamicTable(maxTableSize);
  }

  /** The last block's header list size (RFC 9113 §6.5.2): Σ name + value octets + 32. */
  get listBytes(): number {
    return this.lastListBytes;
  }

  /** Decodes one complete header block into [name, value, name, value, …]. */
  decode(block: Uint8Array, start = 0, end: number = block.byteLength): string[] {
    const fields: string[] = [];
    this.block = block;
    this.pos = start;
    this.end = end;
    try {
      this.readSizeUpdates();
      while (this.pos < end) this.readField(fields);
    } finally {
      this.block = EMPTY; // don't keep the caller's buffer alive
    }
    this.lastListBytes = headerListSize(fields);
    return fields;
  }

  /** §4.2: size updates come only first in a block, and at most two (smallest, then final). */
  private readSizeUpdates(): void {
    for (let count = 0; this.pos < this.end && (this.block[this.pos]! & 0xe0) === 0x20; count++) {
      if (count === 2) throw new HpackError("HPACK: more than two dynamic table size updates in a row");
      const size = this.readInteger(0x1f);
      if (size > this.maxTableSize) {
        throw new HpackError(`HPACK: dynamic table size update to ${size} is above the maximum ${this.maxTableSize}`);
      }
      this.table.resize(size);
    }
  }

  private readField(fields: string[]): void {
    const first = this.block[this.pos]!;
    if (first & 0x80) return this.readIndexed(fields);
    if (first & 0x40) return this.readLiteral(fields, 0x3f, true);
    if (first & 0x20) throw new HpackError("HPACK: dynamic table size update after a header field");
    // Without indexing (0000) and never indexed (0001) decode alike; the caller forwards
    // nothing through an indexing encoder, so the never-indexed mark needs no keeping.
    this.readLiteral(fields, 0x0f, false);
  }

  private readIndexed(fields: string[]): void {
    const index = this.readInteger(0x7f);
    if (index === 0) throw new HpackError("HPACK: indexed field with index 0");
    if (index <= STATIC_COUNT) {
      fields.push(STATIC_NAMES[index]!, STATIC_VALUES[index]!);
      return;
    }
    const relative = this.dynamicIndex(index);
    fields.push(this.table.nameAt(relative), this.table.valueAt(relative));
  }

  private readLiteral(fields: string[], prefixMask: number, withIndexing: boolean): void {
    const nameIndex = this.readInteger(prefixMask);
    const name = nameIndex === 0 ? this.readString() : this.nameAt(nameIndex);
    const value = this.readString();
    if (withIndexing) this.table.insert(name, value);
    fields.push(name, value);
  }

  private nameAt(index: number): string {
    if (index <= STATIC_COUNT) return STATIC_NAMES[index]!;
    return this.table.nameAt(this.dynamicIndex(index));
  }

  /** The dynamic table's relative index (0 = newest) for an HPACK index past the static table. */
  private dynamicIndex(index: number): number {
    const relative = index - STATIC_COUNT - 1;
    if (relative >= this.table.length) {
      throw new HpackError(
        `HPACK: index ${index} is past the table (${STATIC_COUNT} static + ${this.table.length} dynamic)`,
      );
    }
    return relative;
  }

  /** §5.1: an integer whose prefix is the low bits of the current octet (prefixMask = 2^N - 1). */
  private readInteger(prefixMask: number): number {
    const block = this.block;
    let pos = this.pos;
    let value = block[pos++]! & prefixMask;
    if (value < prefixMask) {
      this.pos = pos;
      return value;
    }
    let scale = 1;
    for (let continuation = 0; continuation < MAX_CONTINUATION_OCTETS; continuation++) {
      if (pos >= this.end) throw new HpackError("HPACK: truncated block: it ends inside an integer");
      const octet = block[pos++]!;
      value += (octet & 0x7f) * scale; // arithmetic, not bit operations: no 32-bit wrap
      scale *= 128;
      if ((octet & 0x80) === 0) {
        if (value > MAX_INTEGER) throw new HpackError(`HPACK: integer overflow: ${value} is past 2^31 - 1`);
        this.pos = pos;
        return value;
      }
    }
    throw new HpackError(`HPACK: integer overflow: more than ${MAX_CONTINUATION_OCTETS} continuation octets`);
  }

  /** §5.2: a length-prefixed string literal, Huffman-coded when the H bit is set. */
  private readString(): string {
    if (this.pos >= this.end) throw new HpackError("HPACK: truncated block: it ends before a string");
    const huffman = this.block[this.pos]! & 0x80;
    const length = this.readInteger(0x7f);
    const start = this.pos;
    const stop = start + length;
    if (stop > this.end) {
      throw new HpackError(
        `HPACK: string of ${length} octets runs past the end of the block (${this.end - start} left)`,
      );
    }
    this.pos = stop;
    return huffman ? huffmanDecode(this.block, start, stop) : latin1String(this.block, start, stop);
  }
}

function headerListSize(fields: readonly string[]): number {
  let size = 0;
  for (let i = 0; i < fields.length; i++) size += fields[i]!.length;
  return size + (fields.length / 2) * ENTRY_OVERHEAD;
}

/** A name in the static table: its first index, and the index of each exact pair. */
interface StaticName {
  readonly index: number;
  readonly pairs: Map<string, number>;
}

const STATIC_NAME_LOOKUP = new Map<string, StaticName>();
STATIC_TABLE.forEach(([name, value], i) => {
  let entry = STATIC_NAME_LOOKUP.get(name);
  if (!entry) STATIC_NAME_LOOKUP.set(name, (entry = { index: i + 1, pairs: new Map() }));
  entry.pairs.set(value, i + 1);
});

/** Worst-case octets a field adds beyond its name and value: first octet and two long lengths. */
const FIELD_OVERHEAD_BOUND = 1 + 2 * (1 + MAX_CONTINUATION_OCTETS);

/**
 * Blocks are written here, then copied to a Buffer of their exact size: in Bun 1.4.5 a
 * Buffer view (subarray) costs several times a small allocation plus copy (measured).
 * Blocks too big for it get a Buffer of their own.
 */
const encodeScratch = Buffer.allocUnsafe(16 * 1024);

/**
 * Encodes header blocks for one connection's direction. It inserts nothing into the
 * dynamic table, so the only state is whether the opening size update has gone out.
 */
export class HpackEncoder {
  private announcedTableSize = false;

  /**
   * Encodes [name, value, …] (names already lower-case) as one header block. Strings go
   * as latin1 octets: a char above U+00FF keeps only its low octet, so callers pass
   * header text, which is latin1 already.
   */
  encode(fields: readonly string[]): Buffer {
    if (fields.length % 2 !== 0) throw new Error("HpackEncoder: fields must be [name, value] pairs");
    const bound = encodedBound(fields);
    const out = bound <= encodeScratch.byteLength ? encodeScratch : Buffer.allocUnsafe(bound);
    let pos = 0;
    if (!this.announcedTableSize) {
      // §6.3: table size 0 first, so we owe a peer that advertised 0 (nginx) nothing.
      out[pos++] = 0x20;
      this.announcedTableSize = true;
    }
    for (let i = 0; i < fields.length; i += 2) pos = writeField(out, pos, fields[i]!, fields[i + 1]!);
    if (out !== encodeScratch) return out.subarray(0, pos);
    const block = Buffer.allocUnsafe(pos);
    encodeScratch.copy(block, 0, 0, pos);
    return block;
  }
}

function encodedBound(fields: readonly string[]): number {
  let bound = 1; // the opening size update
  for (let i = 0; i < fields.length; i++) bound += fields[i]!.length;
  return bound + (fields.length / 2) * FIELD_OVERHEAD_BOUND;
}

function writeField(out: Buffer, pos: number, name: string, value: string): number {
  const staticName = STATIC_NAME_LOOKUP.get(name);
  if (staticName === undefined) {
    // §6.2.2 literal without indexing, new name: 0000 0000, the name, the value.
    out[pos++] = 0x00;
    return writeString(out, writeString(out, pos, name), value);
  }
  const exact = staticName.pairs.get(value);
  if (exact !== undefined) return writeInteger(out, pos, 0x80, 7, exact);
  // §6.2.2 literal without indexing, indexed name: 0000 and a 4-bit index, the value.
  return writeString(out, writeInteger(out, pos, 0x00, 4, staticName.index), value);
}

/** §5.1, with `flags` the bits above the N-bit prefix. */
function writeInteger(out: Buffer, pos: number, flags: number, prefixBits: number, value: number): number {
  const prefixMax = (1 << prefixBits) - 1;
  if (value < prefixMax) {
    out[pos++] = flags | value;
    return pos;
  }
  out[pos++] = flags | prefixMax;
  value -= prefixMax;
  while (value >= 0x80) {
    out[pos++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  out[pos++] = value;
  return pos;
}

/** §5.2 without Huffman coding: a 7-bit length, then the octets. */
function writeString(out: Buffer, pos: number, text: string): number {
  pos = writeInteger(out, pos, 0x00, 7, text.length);
  // A loop beats the native write's fixed cost for the short strings most heads carry.
  if (text.length < 24) {
    for (let i = 0; i < text.length; i++) out[pos++] = text.charCodeAt(i);
    return pos;
  }
  return pos + out.write(text, pos, "latin1");
}
