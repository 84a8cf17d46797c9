/**
 * What a sidecar process loads is what it pays for in memory and GC time on every
 * node (bench/README.md): the CA's certificate library (@peculiar/x509 and its ASN.1
 * modules), node:crypto and jose cost it megabytes and serve only the CA, the control
 * plane and the admin commands. This walks the static imports the binary evaluates at
 * start (src/main.ts) and the proxy command's own, and fails if one of them reaches
 * back in; commands behind `load` are imported dynamically, which this walk does not
 * follow, as the bundle does not evaluate them until they run.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const SRC = join(import.meta.dir, "../../src");
const STATIC_IMPORT = /^(?:import|export)\s+(?!type\b)(?:[^"';]*?\sfrom\s+)?["']([^"']+)["']/gm;

/** Every module reachable by static, non-type imports: file → the chain that reached it. */
function reachable(entry: string): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  const visit = (file: string, chain: string[]) => {
    if (seen.has(file)) return;
    seen.set(file, chain);
    if (file.startsWith("pkg:")) return;
    for (const m of readFileSync(file, "utf8").matchAll(STATIC_IMPORT)) {
      const spec = m[1]!;
      let next = spec.startsWith(".") ? resolve(dirname(file), spec) : `pkg:${spec}`;
      if (!next.startsWith("pkg:") && !next.endsWith(".ts")) next += ".ts";
      if (next.startsWith("pkg:") || existsSync(next)) visit(next, [...chain, relative(SRC, file)]);
    }
  };
  visit(join(SRC, entry), []);
  return seen;
}

const FORBIDDEN = ["pkg:@peculiar/x509", "pkg:node:crypto", "pkg:crypto", "pkg:jose"];

describe("the sidecar's module graph", () => {
  for (const entry of ["main.ts", "cli/proxy.ts"])
    test(`${entry} does not statically reach the CA's libraries`, () => {
      const graph = reachable(entry);
      expect(graph.size).toBeGreaterThan(20); // the walk found the graph, so an empty result cannot pass
      const found = FORBIDDEN.filter((p) => graph.has(p)).map((p) => `${p} via ${graph.get(p)!.join(" -> ")}`);
      expect(found).toEqual([]);
    });

  test("the walk sees a forbidden library where one is imported", () => {
    expect(reachable("ca/authority.ts").has("pkg:@peculiar/x509")).toBe(true);
    expect(reachable("cli/control-plane.ts").has("pkg:jose")).toBe(true);
  });
});
