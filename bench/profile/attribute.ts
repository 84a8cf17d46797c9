/**
 * Splits perf samples (`perf script -F ip,sym,dso` of a `perf record -g` run) by where
 * they landed: the kernel, the runtime's native code, libc, the vDSO or JIT code; and
 * names the JavaScript behind each: the JIT function itself, or for native time the
 * first JavaScript function up the call chain (JSC's thunks and inline caches skipped).
 */
import { regionAt, type JitRegion } from "./jitdump.ts";

export interface Attribution {
  samples: number;
  /** e.g. "kernel, no JavaScript below", "runtime, called from JavaScript", "JIT code". */
  byPlace: Map<string, number>;
  /** Samples in each JIT function's own code. */
  jitSelf: Map<string, number>;
  /** Samples in native code, by the JavaScript function that called into it. */
  nativeByCaller: Map<string, number>;
}

const FRAME = /^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$/;
/** JSC's glue between JavaScript and native code: not the caller worth naming. */
const GLUE = /Thunk|InlineCache|Trampoline/;

/** "JSC-FTL: onData#Bbn3qc" → "onData (FTL)"; the hash tells functions of the same name apart only within one run. */
function functionName(region: JitRegion): string {
  const m = /^JSC-(\w+): (.*?)(#\w+)?$/.exec(region.name);
  return m ? `${m[2] || "(anonymous)"} (${m[1]})` : region.name;
}

function placeOf(dso: string): string {
  if (dso.includes("kernel")) return "kernel";
  if (dso.includes("vdso")) return "vDSO (clock reads)";
  if (/libc|ld-linux|libm|libpthread/.test(dso)) return "libc";
  return "runtime";
}

function add(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

export function attribute(perfScript: string, regions: readonly JitRegion[]): Attribution {
  const out: Attribution = { samples: 0, byPlace: new Map(), jitSelf: new Map(), nativeByCaller: new Map() };
  for (const block of perfScript.split(/\n\s*\n/)) {
    const frames: { ip: number; dso: string }[] = [];
    for (const line of block.split("\n")) {
      const m = FRAME.exec(line);
      if (m) frames.push({ ip: parseInt(m[1]!, 16), dso: m[3]! });
    }
    if (frames.length === 0) continue;
    out.samples++;
    const leaf = regionAt(regions, frames[0]!.ip);
    if (leaf !== undefined) {
      add(out.byPlace, "JIT code");
      add(out.jitSelf, functionName(leaf));
      continue;
    }
    const place = placeOf(frames[0]!.dso);
    let caller: JitRegion | undefined;
    for (const f of frames.slice(1)) {
      const r = regionAt(regions, f.ip);
      if (r !== undefined && !GLUE.test(r.name)) {
        caller = r;
        break;
      }
    }
    if (caller === undefined) add(out.byPlace, `${place}, no JavaScript below`);
    else {
      add(out.byPlace, `${place}, called from JavaScript`);
      add(out.nativeByCaller, functionName(caller));
    }
  }
  return out;
}

export function renderAttribution(a: Attribution, top: number): string {
  const pct = (n: number) => `${((100 * n) / Math.max(1, a.samples)).toFixed(2).padStart(6)}%`;
  const list = (m: Map<string, number>) =>
    [...m.entries()]
      .sort((x, y) => y[1] - x[1])
      .slice(0, top)
      .map(([k, v]) => `  ${pct(v)}  ${k}`);
  return [
    `${a.samples} samples`,
    ...list(a.byPlace),
    "",
    `JIT code, by function (top ${top}):`,
    ...list(a.jitSelf),
    "",
    `native time, by the JavaScript that called into it (top ${top}):`,
    ...list(a.nativeByCaller),
  ].join("\n");
}
