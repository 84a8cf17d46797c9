/**
 * The head a client gets for a relayed upstream response, built as bytes: the
 * upstream's status line and field lines are copied as received — the strict parser
 * (transport/h1/response-head.ts) validated every byte of them — less the fields that
 * never cross a proxy (headers.ts: hop-by-hop, identity, framing, whatever the
 * upstream's Connection lists, and a sidecar's answer headers when the upstream is no
 * sidecar), then the framing and connection lines this proxy sets.
 *
 * Why bytes: making a string of every name and value, joining them and encoding the
 * result again cost about 8% of a hop's CPU, for headers that pass through unchanged.
 * Copying also keeps obs-text bytes exactly as they were.
 */
import { RESPONSE_SKIP, RESPONSE_SKIP_NOT_FROM_PROXY } from "./headers.ts";
import { nameIs, type ResponseHead } from "./transport/h1/response-head.ts";
import { latin1 } from "./transport/h1/latin1.ts";
import { inCgiList } from "../core/cgi-name.ts";

const SP = 32;

/** Names by length: a field is compared only with skip names as long as its own. */
function byLength(names: ReadonlySet<string>): string[][] {
  const table: string[][] = [];
  for (const name of names) (table[name.length] ??= []).push(name);
  return table;
}
const SKIP_FROM_PROXY = byLength(RESPONSE_SKIP);
const SKIP_NOT_FROM_PROXY = byLength(RESPONSE_SKIP_NOT_FROM_PROXY);

/** `fromProxy`: the upstream is a sidecar, whose answer headers go on; `listed`: the names the upstream's Connection lists; `dropped`: a route's, in cgiName form, matched in any spelling. */
function skipped(fromProxy: boolean, buf: Buffer, a: number, len: number, listed: string[] | undefined, dropped: readonly string[] | undefined): boolean {
  const names = (fromProxy ? SKIP_FROM_PROXY : SKIP_NOT_FROM_PROXY)[len];
  if (names !== undefined) for (const name of names) if (nameIs(buf, a, len, name)) return true;
  if (listed === undefined && dropped === undefined) return false;
  const name = latin1(buf, a, a + len).toLowerCase();
  return (listed !== undefined && listed.includes(name)) || (dropped !== undefined && inCgiList(dropped, name));
}

/** Where field i's line ends: where the next one starts, or the end of the fields. */
function lineEnd(at: number[], i: number, fieldsEnd: number): number {
  return i + 4 < at.length ? at[i + 4]! : fieldsEnd;
}

/** Field indices a call skips: reused across calls (each runs to its end synchronously), so no array per response. */
const SKIPPED: number[] = [];

/**
 * Where a head that goes out before its caller returns is built: one buffer, reused, so
 * the common response allocates none (the listener copies what its socket does not take
 * at once: h1-server/connection.ts).
 */
const SCRATCH = Buffer.allocUnsafe(16 * 1024);

/** A built head: `used` bytes of `bytes`, then room for the body. */
export interface RelayedHead {
  bytes: Buffer;
  used: number;
}

/** relayedHead's result, reused: each caller reads it at once, so no object per response. */
const RESULT: RelayedHead = { bytes: SCRATCH, used: 0 };

/**
 * `fromProxy`: the upstream is a sidecar (its answer headers go on). `statusLine`: what to
 * send instead of the upstream's status line, or undefined to copy it (it must then be an
 * HTTP/1.1 line with a reason phrase, or an empty one after SP).
 * `dropped`: names a route removes (cgiName form). `tail`: the lines this proxy adds and
 * the blank line, ASCII. Returns the head followed
 * by `reserve` bytes of room, so a body that is already here can join it in one write:
 * the head is the first `used` bytes. `transient`: the caller has it written before it
 * returns, so it may be the shared scratch buffer, which the next call overwrites. The
 * result is overwritten by the next call too.
 */
export function relayedHead(head: ResponseHead, fromProxy: boolean, statusLine: string | undefined, tail: string, reserve: number, transient: boolean, dropped?: readonly string[]): RelayedHead {
  const { buf, start, fieldsStart, fieldsEnd, at, connectionTokens } = head.raw;
  // Which fields stay out decides the size, so it is found first, once per field.
  SKIPPED.length = 0;
  let kept = fieldsEnd - fieldsStart;
  for (let i = 0; i < at.length; i += 4)
    if (skipped(fromProxy, buf, at[i]!, at[i + 1]! - at[i]!, connectionTokens, dropped)) {
      SKIPPED.push(i);
      kept -= lineEnd(at, i, fieldsEnd) - at[i]!;
    }
  const length = (statusLine === undefined ? fieldsStart - start : statusLine.length) + kept + tail.length;
  const bytes = transient && length + reserve <= SCRATCH.length ? SCRATCH : Buffer.allocUnsafe(length + reserve);
  // Kept lines are contiguous runs in buf between skipped ones: copy each run once, not each
  // line; a status line that is kept starts the first run.
  let used = statusLine === undefined ? 0 : bytes.write(statusLine, 0, "latin1");
  let run = statusLine === undefined ? start : fieldsStart;
  for (const i of SKIPPED) {
    if (at[i]! > run) used += buf.copy(bytes, used, run, at[i]!);
    run = lineEnd(at, i, fieldsEnd);
  }
  if (fieldsEnd > run) used += buf.copy(bytes, used, run, fieldsEnd);
  bytes.write(tail, used, "latin1");
  RESULT.bytes = bytes;
  RESULT.used = length;
  return RESULT;
}

/**
 * Whether the upstream's head can go to the client exactly as received, its own framing
 * line included: a reusable status line, one Content-Length in plain form (digits, no
 * leading zero) and no field this proxy would drop. The client then gets what
 * relayedHead would build, but for where the Content-Length line sits. The caller
 * decides whether its side (the client's version, the connection's fate) adds anything.
 */
export function sendableAsReceived(head: ResponseHead, fromProxy: boolean): boolean {
  if (head.contentLength < 0 || head.chunked || !statusLineReusable(head)) return false;
  const { buf, at, connectionTokens } = head.raw;
  if (connectionTokens !== undefined) return false; // a Connection field, which is dropped
  let lengths = 0;
  for (let i = 0; i < at.length; i += 4) {
    const a = at[i]!;
    const len = at[i + 1]! - a;
    if (len === 14 && nameIs(buf, a, len, "content-length")) {
      const vs = at[i + 2]!;
      if (++lengths > 1 || (buf[vs] === 48 && at[i + 3]! - vs > 1)) return false;
    } else if (skipped(fromProxy, buf, a, len, undefined, undefined)) return false;
  }
  return lengths === 1;
}

/** Whether the head carries x-mesh-error: a proxy's own answer (the callee's sidecar's), which a route's edits leave alone. */
export function fromAProxy(head: ResponseHead): boolean {
  const { buf, at } = head.raw;
  for (let i = 0; i < at.length; i += 4) if (at[i + 1]! - at[i]! === 12 && nameIs(buf, at[i]!, 12, "x-mesh-error")) return true;
  return false;
}

/** Whether the upstream's status line can go to the client as it is: HTTP/1.1, and SP before the (maybe empty) reason. */
export function statusLineReusable(head: ResponseHead): boolean {
  return head.minor === 1 && head.raw.buf[head.raw.start + 12] === SP;
}
