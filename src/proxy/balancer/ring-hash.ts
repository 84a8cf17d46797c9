import type { Random } from "../../core/clock.ts";
import type { Balancer, Endpoint, PickContext } from "../endpoint.ts";
import { WeightedSampler, weightOf } from "./sample.ts";

export interface RingHashOptions {
  /** Request header whose value is the hash key; tried first. */
  header?: string;
  /** Cookie whose value is the hash key, when the header is absent or not configured. */
  cookie?: string;
  /** Raises points per unit of weight so the ring has at least this many (for tiny weights). */
  minRingSize?: number;
}

/** Points per unit of weight. Fixed, so an endpoint's points depend on nothing but itself. */
const POINTS_PER_WEIGHT = 100;
const MAX_RING_SIZE = 1 << 20;
/** Packs (hash, owner) into one double so the build can use a typed-array numeric sort. */
const OWNER_SPACE = 2 ** 21;

const hash32 = (s: string): number => Bun.hash.xxHash32(s);

interface Ring {
  /** The caller's array last seen with this set: the O(1) cache hit. */
  array: readonly Endpoint[];
  /** A copy of the candidates and their weights the ring was built from, to recognise the same set. */
  source: readonly Endpoint[];
  weights: Float64Array;
  members: Endpoint[];
  hashes: Uint32Array;
  owners: Uint32Array;
}

/**
 * Ketama-style consistent hashing: each endpoint owns points on a 32-bit ring (100 per unit
 * of weight, hashed from its address, not its position), and a key goes to the first point
 * at or after its hash. Removing an endpoint deletes only its points, so only the keys it
 * owned move; everyone else's sessions stay put. Requests without a key are spread at random.
 *
 * The ring is built once per distinct candidate set and reused: an identical array is an O(1)
 * hit, and an equal set in a new array is recognised by an O(n) identity/weight comparison.
 */
export class RingHashBalancer implements Balancer {
  private ring: Ring | undefined;
  private readonly sampler: WeightedSampler;

  constructor(
    private readonly options: RingHashOptions,
    random: Random,
  ) {
    this.sampler = new WeightedSampler(random);
  }

  pick(candidates: readonly Endpoint[], ctx: PickContext): Endpoint | undefined {
    const key = this.keyOf(ctx);
    if (key === null) return this.sampler.one(candidates);
    const ring = this.ringFor(candidates);
    const { hashes } = ring;
    if (hashes.length === 0) return undefined;
    const h = hash32(key);
    let lo = 0;
    let hi = hashes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (hashes[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return ring.members[ring.owners[lo === hashes.length ? 0 : lo]!];
  }

  private keyOf(ctx: PickContext): string | null {
    const { header, cookie } = this.options;
    if (header) {
      const v = ctx.header(header);
      if (v) return v;
    }
    if (cookie) return cookieValue(ctx.header("cookie"), cookie);
    return null;
  }

  private ringFor(candidates: readonly Endpoint[]): Ring {
    const r = this.ring;
    if (r !== undefined) {
      // Length guards against a caller mutating the array it passed before (it is readonly).
      if (candidates === r.array && candidates.length === r.source.length) return r;
      if (sameSet(r, candidates)) {
        r.array = candidates;
        return r;
      }
    }
    return (this.ring = buildRing(candidates, this.options.minRingSize ?? 0));
  }
}

function sameSet(r: Ring, candidates: readonly Endpoint[]): boolean {
  if (candidates.length !== r.source.length) return false;
  for (let i = 0; i < candidates.length; i++) {
    if (candidates[i] !== r.source[i] || weightOf(candidates[i]!) !== r.weights[i]) return false;
  }
  return true;
}

function buildRing(candidates: readonly Endpoint[], minRingSize: number): Ring {
  const source = candidates.slice();
  const weights = Float64Array.from(source, weightOf);
  // Sorted by key so equal hashes tie-break by address, independent of candidate order.
  const members = source.filter((e) => weightOf(e) > 0).sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0));
  if (members.length >= OWNER_SPACE) throw new RangeError(`ring hash supports < ${OWNER_SPACE} endpoints`);
  let total = 0;
  for (const m of members) total += weightOf(m);
  // A minRingSize that binds makes points per weight depend on the set, so a set change may
  // then move a few extra keys (as in Envoy); the default never binds.
  let perWeight = total > 0 ? Math.max(POINTS_PER_WEIGHT, minRingSize / total) : 0;
  if (total * perWeight > MAX_RING_SIZE) perWeight = MAX_RING_SIZE / total;
  const counts = members.map((m) => Math.max(1, Math.round(weightOf(m) * perWeight)));
  const packed = new Float64Array(counts.reduce((a, b) => a + b, 0));
  let k = 0;
  members.forEach((m, owner) => {
    for (let v = 0; v < counts[owner]!; v++) packed[k++] = hash32(`${m.key}-${v}`) * OWNER_SPACE + owner;
  });
  packed.sort();
  const hashes = new Uint32Array(packed.length);
  const owners = new Uint32Array(packed.length);
  for (let i = 0; i < packed.length; i++) {
    const h = Math.floor(packed[i]! / OWNER_SPACE);
    hashes[i] = h;
    owners[i] = packed[i]! - h * OWNER_SPACE;
  }
  return { array: candidates, source, weights, members, hashes, owners };
}

/** The named cookie's value from a Cookie header ("a=1; b=2"), scanning in place. */
export function cookieValue(header: string | null, name: string): string | null {
  if (!header) return null;
  let i = 0;
  while (i < header.length) {
    while (header.charCodeAt(i) === 32) i++; // spaces after ';'
    let end = header.indexOf(";", i);
    if (end < 0) end = header.length;
    if (header.startsWith(name, i) && header.charCodeAt(i + name.length) === 61 /* = */) {
      const v = header.slice(i + name.length + 1, end).trim();
      return v === "" ? null : v;
    }
    i = end + 1;
  }
  return null;
}
