/** Plain-text tables and number formats for the report. */

/** Columns padded to their widest cell; the first column left-aligned, the rest right-aligned (numbers) unless `left`. */
export function table(header: string[], rows: string[][], left = false): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 || left ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

const finite = (n: number | undefined): n is number => n !== undefined && Number.isFinite(n);

export const int = (n: number | undefined) => (finite(n) ? Math.round(n).toLocaleString("en-US") : "-");
export const ms = (n: number | undefined) => (finite(n) ? (n < 10 ? n.toFixed(2) : n.toFixed(1)) : "-");
export const mb = (n: number | undefined) => (finite(n) ? n.toFixed(1) : "-");
export const times = (n: number | undefined) => (finite(n) ? `${n.toFixed(2)}x` : "-");
