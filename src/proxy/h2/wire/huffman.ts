/**
 * The HPACK Huffman code (RFC 7541 §5.2, Appendix B) and its decoder.
 *
 * Decoding is a state machine that eats one input octet per step: a state is an internal
 * node of the code's tree (256 of them for 257 symbols), and a table built once at module
 * load gives, for each state and octet, the next state and the zero to two symbols that
 * octet completes (the shortest code is 5 bits, so no octet completes more than two).
 * Nothing is allocated per octet, and one string is made per call.
 */
import { HpackError } from "./hpack-error.ts";

/**
 * RFC 7541 Appendix B as data: for symbols 0–255 and EOS (256), the code (right-aligned)
 * followed by its length in bits.
 */
export const HUFFMAN_CODE: readonly number[] = [
  // 0–31: control octets
  0x1ff8, 13, 0x7fffd8, 23, 0xfffffe2, 28, 0xfffffe3, 28, 0xfffffe4, 28, 0xfffffe5, 28, 0xfffffe6, 28, 0xfffffe7, 28,
  0xfffffe8, 28, 0xffffea, 24, 0x3ffffffc, 30, 0xfffffe9, 28, 0xfffffea, 28, 0x3ffffffd, 30, 0xfffffeb, 28, 0xfffffec, 28,
  0xfffffed, 28, 0xfffffee, 28, 0xfffffef, 28, 0xffffff0, 28, 0xffffff1, 28, 0xffffff2, 28, 0x3ffffffe, 30, 0xffffff3, 28,
  0xffffff4, 28, 0xffffff5, 28, 0xffffff6, 28, 0xffffff7, 28, 0xffffff8, 28, 0xffffff9, 28, 0xffffffa, 28, 0xffffffb, 28,
  // 32–63: ' ' ! " # $ % & ' ( ) * + , - . / 0–9 : ; < = > ?
  0x14, 6, 0x3f8, 10, 0x3f9, 10, 0xffa, 12, 0x1ff9, 13, 0x15, 6, 0xf8, 8, 0x7fa, 11,
  0x3fa, 10, 0x3fb, 10, 0xf9, 8, 0x7fb, 11, 0xfa, 8, 0x16, 6, 0x17, 6, 0x18, 6,
  0x0, 5, 0x1, 5, 0x2, 5, 0x19, 6, 0x1a, 6, 0x1b, 6, 0x1c, 6, 0x1d, 6,
  0x1e, 6, 0x1f, 6, 0x5c, 7, 0xfb, 8, 0x7ffc, 15, 0x20, 6, 0xffb, 12, 0x3fc, 10,
  // 64–95: @ A–Z [ \ ] ^ _
  0x1ffa, 13, 0x21, 6, 0x5d, 7, 0x5e, 7, 0x5f, 7, 0x60, 7, 0x61, 7, 0x62, 7,
  0x63, 7, 0x64, 7, 0x65, 7, 0x66, 7, 0x67, 7, 0x68, 7, 0x69, 7, 0x6a, 7,
  0x6b, 7, 0x6c, 7, 0x6d, 7, 0x6e, 7, 0x6f, 7, 0x70, 7, 0x71, 7, 0x72, 7,
  0xfc, 8, 0x73, 7, 0xfd, 8, 0x1ffb, 13, 0x7fff0, 19, 0x1ffc, 13, 0x3ffc, 14, 0x22, 6,
  // 96–127: ` a–z { | } ~ DEL
  0x7ffd, 15, 0x3, 5, 0x23, 6, 0x4, 5, 0x24, 6, 0x5, 5, 0x25, 6, 0x26, 6,
  0x27, 6, 0x6, 5, 0x74, 7, 0x75, 7, 0x28, 6, 0x29, 6, 0x2a, 6, 0x7, 5,
  0x2b, 6, 0x76, 7, 0x2c, 6, 0x8, 5, 0x9, 5, 0x2d, 6, 0x77, 7, 0x78, 7,
  0x79, 7, 0x7a, 7, 0x7b, 7, 0x7ffe, 15, 0x7fc, 11, 0x3ffd, 14, 0x1ffd, 13, 0xffffffc, 28,
  // 128–159
  0xfffe6, 20, 0x3fffd2, 22, 0xfffe7, 20, 0xfffe8, 20, 0x3fffd3, 22, 0x3fffd4, 22, 0x3fffd5, 22, 0x7fffd9, 23,
  0x3fffd6, 22, 0x7fffda, 23, 0x7fffdb, 23, 0x7fffdc, 23, 0x7fffdd, 23, 0x7fffde, 23, 0xffffeb, 24, 0x7fffdf, 23,
  0xffffec, 24, 0xffffed, 24, 0x3fffd7, 22, 0x7fffe0, 23, 0xffffee, 24, 0x7fffe1, 23, 0x7fffe2, 23, 0x7fffe3, 23,
  0x7fffe4, 23, 0x1fffdc, 21, 0x3fffd8, 22, 0x7fffe5, 23, 0x3fffd9, 22, 0x7fffe6, 23, 0x7fffe7, 23, 0xffffef, 24,
  // 160–191
  0x3fffda, 22, 0x1fffdd, 21, 0xfffe9, 20, 0x3fffdb, 22, 0x3fffdc, 22, 0x7fffe8, 23, 0x7fffe9, 23, 0x1fffde, 21,
  0x7fffea, 23, 0x3fffdd, 22, 0x3fffde, 22, 0xfffff0, 24, 0x1fffdf, 21, 0x3fffdf, 22, 0x7fffeb, 23, 0x7fffec, 23,
  0x1fffe0, 21, 0x1fffe1, 21, 0x3fffe0, 22, 0x1fffe2, 21, 0x7fffed, 23, 0x3fffe1, 22, 0x7fffee, 23, 0x7fffef, 23,
  0xfffea, 20, 0x3fffe2, 22, 0x3fffe3, 22, 0x3fffe4, 22, 0x7ffff0, 23, 0x3fffe5, 22, 0x3fffe6, 22, 0x7ffff1, 23,
  // 192–223
  0x3ffffe0, 26, 0x3ffffe1, 26, 0xfffeb, 20, 0x7fff1, 19, 0x3fffe7, 22, 0x7ffff2, 23, 0x3fffe8, 22, 0x1ffffec, 25,
  0x3ffffe2, 26, 0x3ffffe3, 26, 0x3ffffe4, 26, 0x7ffffde, 27, 0x7ffffdf, 27, 0x3ffffe5, 26, 0xfffff1, 24, 0x1ffffed, 25,
  0x7fff2, 19, 0x1fffe3, 21, 0x3ffffe6, 26, 0x7ffffe0, 27, 0x7ffffe1, 27, 0x3ffffe7, 26, 0x7ffffe2, 27, 0xfffff2, 24,
  0x1fffe4, 21, 0x1fffe5, 21, 0x3ffffe8, 26, 0x3ffffe9, 26, 0xffffffd, 28, 0x7ffffe3, 27, 0x7ffffe4, 27, 0x7ffffe5, 27,
  // 224–255
  0xfffec, 20, 0xfffff3, 24, 0xfffed, 20, 0x1fffe6, 21, 0x3fffe9, 22, 0x1fffe7, 21, 0x1fffe8, 21, 0x7ffff3, 23,
  0x3fffea, 22, 0x3fffeb, 22, 0x1ffffee, 25, 0x1ffffef, 25, 0xfffff4, 24, 0xfffff5, 24, 0x3ffffea, 26, 0x7ffff4, 23,
  0x3ffffeb, 26, 0x7ffffe6, 27, 0x3ffffec, 26, 0x3ffffed, 26, 0x7ffffe7, 27, 0x7ffffe8, 27, 0x7ffffe9, 27, 0x7ffffea, 27,
  0x7ffffeb, 27, 0xffffffe, 28, 0x7ffffec, 27, 0x7ffffed, 27, 0x7ffffee, 27, 0x7ffffef, 27, 0x7fffff0, 27, 0x3ffffee, 26,
  // 256: EOS
  0x3fffffff, 30,
];

export const EOS = 256;

/** The code's binary tree: internal nodes are 0–255 (0 the root), leaves LEAF + symbol. */
const LEAF = 0x1000;

interface CodeTree {
  /** child[node * 2 + bit]: an internal node, or LEAF + symbol. */
  readonly child: Int32Array;
  /** Per internal node: the bits from the root are all 1s and at most 7 (valid padding). */
  readonly endsCleanly: Uint8Array;
  /** Per internal node: the bits from the root are all 1s (a prefix of EOS). */
  readonly onEosPath: Uint8Array;
}

function buildCodeTree(): CodeTree {
  const child = new Int32Array(512).fill(-1);
  const depth = new Uint8Array(256);
  const onEosPath = new Uint8Array(256);
  onEosPath[0] = 1;
  let nodes = 1;
  for (let symbol = 0; symbol <= EOS; symbol++) {
    const code = HUFFMAN_CODE[symbol * 2]!;
    const length = HUFFMAN_CODE[symbol * 2 + 1]!;
    let node = 0;
    for (let i = length - 1; i > 0; i--) {
      const bit = (code >>> i) & 1;
      let next = child[node * 2 + bit]!;
      if (next < 0) {
        next = nodes++;
        child[node * 2 + bit] = next;
        depth[next] = depth[node]! + 1;
        onEosPath[next] = onEosPath[node]! & bit;
      }
      node = next;
    }
    child[node * 2 + (code & 1)] = LEAF + symbol;
  }
  const endsCleanly = new Uint8Array(256);
  for (let node = 0; node < nodes; node++) endsCleanly[node] = onEosPath[node]! && depth[node]! <= 7 ? 1 : 0;
  return { child, endsCleanly, onEosPath };
}

// Layout of a transition: bits 0–7 next state, 8–15 first symbol, 16–23 second symbol,
// 24–25 how many symbols were completed, bit 26 the octet reached EOS.
const SYMBOLS_SHIFT = 24;
const REACHED_EOS = 1 << 26;

/**
 * transitions[state << 8 | octet], for all 256 states and 256 octets, each made of two
 * nibble steps (4096 short walks rather than 65536 long ones: this runs once, mostly in
 * the interpreter, and takes about 2 ms rather than 5).
 */
function buildTransitions(tree: CodeTree): Uint32Array {
  const nibbleSteps = new Uint32Array(256 * 16);
  for (let state = 0; state < 256; state++) {
    for (let nibble = 0; nibble < 16; nibble++) nibbleSteps[state * 16 + nibble] = walkBits(tree, state, nibble, 4);
  }
  const transitions = new Uint32Array(256 * 256);
  for (let state = 0; state < 256; state++) {
    for (let highNibble = 0; highNibble < 16; highNibble++) {
      const high = nibbleSteps[state * 16 + highNibble]!;
      const row = (state << 8) | (highNibble << 4);
      if (high & REACHED_EOS) {
        transitions.fill(REACHED_EOS, row, row + 16);
        continue;
      }
      // A nibble completes at most one symbol (codes are 5 bits or more): the high
      // nibble's symbol, if any, comes first.
      const highSymbols = high >>> SYMBOLS_SHIFT;
      const lowSymbolShift = highSymbols ? 8 : 0;
      const highSymbol = high & 0xff00;
      const lowRow = (high & 0xff) * 16;
      for (let lowNibble = 0; lowNibble < 16; lowNibble++) {
        const low = nibbleSteps[lowRow + lowNibble]!;
        transitions[row | lowNibble] =
          low & REACHED_EOS
            ? REACHED_EOS
            : (low & 0xff) |
              highSymbol |
              ((low & 0xff00) << lowSymbolShift) |
              ((highSymbols + (low >>> SYMBOLS_SHIFT)) << SYMBOLS_SHIFT);
      }
    }
  }
  return transitions;
}

/** Walks `width` bits from `state`, most significant first, into a transition. */
function walkBits(tree: CodeTree, state: number, bits: number, width: number): number {
  let node = state;
  let symbols = 0;
  let emitted = 0;
  for (let i = width - 1; i >= 0; i--) {
    const next = tree.child[node * 2 + ((bits >>> i) & 1)]!;
    if (next < LEAF) {
      node = next;
      continue;
    }
    if (next - LEAF === EOS) return REACHED_EOS;
    emitted |= (next - LEAF) << (8 + 8 * symbols++);
    node = 0;
  }
  return node | emitted | (symbols << SYMBOLS_SHIFT);
}

const TREE = buildCodeTree();
const TRANSITIONS = buildTransitions(TREE);

/** Decoded octets land here before becoming a string; grown when a longer string comes. */
let scratch = Buffer.allocUnsafe(256);

/**
 * Decodes the Huffman-coded octets src[start, end) into a latin1 string. Throws
 * HpackError for EOS inside the string and for padding that is longer than 7 bits or not
 * all 1s (RFC 7541 §5.2).
 */
export function huffmanDecode(src: Uint8Array, start: number, end: number): string {
  // At most 8/5 symbols an octet (the shortest code is 5 bits), plus a slot for the
  // unused second symbol. Integer arithmetic only: a fractional bound made JSC run this
  // function several times slower (measured).
  const bound = (end - start) * 2 + 2;
  const out = scratch.byteLength >= bound ? scratch : growScratch(bound);
  let state = 0;
  let length = 0;
  for (let i = start; i < end; i++) {
    const step = TRANSITIONS[(state << 8) | src[i]!]!;
    if (step & REACHED_EOS) throw new HpackError("HPACK: EOS symbol inside a Huffman-coded string");
    out[length] = step >>> 8;
    out[length + 1] = step >>> 16;
    length += (step >>> SYMBOLS_SHIFT) & 3;
    state = step & 0xff;
  }
  if (!TREE.endsCleanly[state]) throw new HpackError(paddingFault(state));
  return latin1String(out, 0, length);
}

function growScratch(bound: number): Buffer {
  scratch = Buffer.allocUnsafe(Math.max(bound, scratch.byteLength * 2));
  return scratch;
}

function paddingFault(state: number): string {
  return TREE.onEosPath[state]
    ? "HPACK: Huffman padding longer than 7 bits"
    : "HPACK: Huffman padding is not a prefix of EOS (not all 1s)";
}

const bufferToString = Buffer.prototype.toString;

/**
 * The octets bytes[start, end) as a latin1 string (one char per octet). Short strings
 * are built in a loop, which beats the native call's fixed cost below about 6 octets.
 */
export function latin1String(bytes: Uint8Array, start: number, end: number): string {
  if (end - start < 6) {
    let text = "";
    for (let i = start; i < end; i++) text += String.fromCharCode(bytes[i]!);
    return text;
  }
  return bufferToString.call(bytes as Buffer, "latin1", start, end);
}
