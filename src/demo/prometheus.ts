/** Just enough of the Prometheus text format to read a sidecar's /metrics: samples, sums and histogram quantiles. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? "").matchAll(LABEL)) labels[k!] = v!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

export type Match = Record<string, string>;

function matches(s: Sample, name: string, match: Match): boolean {
  return s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v);
}

export function sum(samples: Sample[], name: string, match: Match = {}): number {
  return samples.reduce((acc, s) => (matches(s, name, match) ? acc + s.value : acc), 0);
}

/** Cumulative bucket counts by upper bound (`le`), summed over matching series. */
export function buckets(samples: Sample[], name: string, match: Match = {}): Map<number, number> {
  const out = new Map<number, number>();
  for (const s of samples) {
    if (!matches(s, `${name}_bucket`, match)) continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    out.set(le, (out.get(le) ?? 0) + s.value);
  }
  return out;
}

/**
 * The q-quantile of the observations between two scrapes (bucket counts `before` to
 * `after`), interpolated within its bucket as Prometheus' histogram_quantile does.
 * Undefined when nothing was observed; the largest finite bound when it lies beyond.
 */
export function quantile(q: number, after: Map<number, number>, before: Map<number, number> = new Map()): number | undefined {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const cum = bounds.map((le) => (after.get(le) ?? 0) - (before.get(le) ?? 0));
  const total = cum[cum.length - 1] ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    if (cum[i]! < rank) continue;
    const upper = bounds[i]!;
    const lower = i === 0 ? 0 : bounds[i - 1]!;
    if (upper === Infinity) return lower;
    const below = i === 0 ? 0 : cum[i - 1]!;
    const inBucket = cum[i]! - below;
    return inBucket > 0 ? lower + ((upper - lower) * (rank - below)) / inBucket : upper;
  }
  return undefined;
}
