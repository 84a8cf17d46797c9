/**
 * Turns the proxy's stderr (census lines from probe.ts, and JSC's GC log) into heap cells
 * per request. Three counts: before the requests, after them, and at once again; the
 * last pair is what counting itself allocates, and is taken off.
 */

/** Starts each count probe.ts writes: the mark, the count's number, then the counts as JSON. */
export const CENSUS_MARK = "ALLOC-CENSUS ";
/** probe.ts writes it with "start" after a full collection, and with "end" after the young collection that follows. */
export const KEPT_MARK = "ALLOC-KEPT ";

export type Counts = Record<string, number>;

export interface Census {
  /** Cells per request by type, largest first; types under 0.05 a request are left out. */
  perRequest: [string, number][];
  total: number;
  /** Collections seen between the first two counts (any: the figures are not whole). */
  collections: number;
}

/** Whether `stderr` holds count number `n` (counts are numbered from 1). */
export function hasCount(stderr: string, n: number): boolean {
  return stderr.includes(`${CENSUS_MARK}${n} `);
}

/** The census lines and GC starts in `stderr`, in order. */
function events(stderr: string): ({ kind: "census"; counts: Counts } | { kind: "gc" })[] {
  const out: ({ kind: "census"; counts: Counts } | { kind: "gc" })[] = [];
  for (const line of stderr.split("\n")) {
    if (line.startsWith(CENSUS_MARK)) out.push({ kind: "census", counts: JSON.parse(line.slice(line.indexOf(" ", CENSUS_MARK.length) + 1)) as Counts });
    else if (/^\[GC<[0-9a-fx]+>: START/.test(line)) out.push({ kind: "gc" });
  }
  return out;
}

/** The census of the last three counts in `stderr`, `requests` having run between the first two. */
export function censusOf(stderr: string, requests: number): Census {
  const all = events(stderr);
  const at = all.flatMap((e, i) => (e.kind === "census" ? [i] : []));
  if (at.length < 3) throw new Error(`expected 3 heap counts from the probe, found ${at.length}`);
  const [i0, i1, i2] = at.slice(-3) as [number, number, number];
  const counts = (i: number) => (all[i] as { counts: Counts }).counts;
  const [c0, c1, c2] = [counts(i0), counts(i1), counts(i2)];
  const collections = all.slice(i0, i1).filter((e) => e.kind === "gc").length;
  const types = new Set([...Object.keys(c0), ...Object.keys(c1), ...Object.keys(c2)]);
  const perRequest: [string, number][] = [];
  let total = 0;
  for (const type of types) {
    const during = (c1[type] ?? 0) - (c0[type] ?? 0);
    const counting = (c2[type] ?? 0) - (c1[type] ?? 0);
    const n = (during - counting) / requests;
    total += n;
    if (n >= 0.05) perRequest.push([type, n]);
  }
  perRequest.sort((a, b) => b[1] - a[1]);
  return { perRequest, total, collections };
}

/**
 * KB the last young collection between a KEPT_MARK "start" and "end" visited (JSC's GC
 * log, `v=`): what the requests in between left reachable, plus the old objects they
 * wrote to. Undefined until both marks and the collection are in `stderr`.
 */
export function keptOf(stderr: string): number | undefined {
  const start = stderr.lastIndexOf(`${KEPT_MARK}start`);
  const end = stderr.indexOf(`${KEPT_MARK}end`, start);
  if (start < 0 || end < 0) return undefined;
  let kept: number | undefined;
  for (const line of stderr.slice(start, end).split("\n")) {
    if (!line.includes("EdenCollection")) continue;
    // The log gives the bytes visited after each marking step; the last is the total.
    const visited = [...line.matchAll(/ v=(\d+)kb/g)].map((m) => Number(m[1]));
    kept = visited.at(-1);
  }
  return kept;
}
