import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { z } from "zod";
import { Duration } from "../../src/config/duration.ts";
import { kinds } from "../../src/config/manifest.ts";
import { loadCommandTree, walkCommands } from "../../src/docs/commands.ts";
import { code, lines, text } from "../../src/docs/markdown.ts";
import { fields, inputSchema } from "../../src/docs/fields.ts";
import { kindFields } from "../../src/docs/kinds.ts";
import { readRegion, renderReference, writeRegion } from "../../src/docs/reference.ts";
import { rootCommand } from "../../src/main.ts";
import { proxyMetrics } from "../../src/proxy/metrics.ts";

const reference = await renderReference();

/** The generated text under each `#### ` heading, by heading. */
const sections = new Map(
  reference
    .split(/^#### /m)
    .slice(1)
    .map((s) => [s.slice(0, s.indexOf("\n")), s] as const),
);

describe("README reference", () => {
  test("matches the CLI specs and schemas", async () => {
    const readme = await Bun.file(join(import.meta.dir, "../../README.md")).text();
    const actual = readRegion(readme);
    const expected = `\n${reference}\n`;
    if (actual !== expected) {
      const a = actual.split("\n");
      const e = expected.split("\n");
      const line = e.findIndex((l, i) => l !== a[i]);
      throw new Error(
        `README reference is out of date: run npm run docs\n` +
          `  first difference at line ${line + 1} of the region:\n  README:    ${a[line] ?? "(end)"}\n  generated: ${e[line] ?? "(end)"}`,
      );
    }
  });

  test("documents every command with all its flags and arguments", async () => {
    const all = walkCommands(await loadCommandTree(rootCommand));
    expect(all.length).toBeGreaterThan(10);
    for (const { path, spec } of all) {
      const section = sections.get(`\`${path}\``);
      if (!section) throw new Error(`no section for ${path}`);
      expect(section).toContain(spec.summary.slice(0, 20));
      for (const f of spec.flags ?? []) expect(section).toContain(`--${f.name}`);
      for (const p of spec.positionals ?? []) expect(section).toContain(`\`${p.name}`);
    }
  });

  test("documents every sidecar metric with its type and help, as /metrics declares them", () => {
    const section = reference.slice(reference.indexOf("### Sidecar metrics"));
    const declared = proxyMetrics().registry.render().split("\n").filter((l) => l.startsWith("# TYPE "));
    expect(declared.length).toBeGreaterThan(10);
    for (const line of declared) {
      const [, , name, type] = line.split(" ");
      expect(section).toContain(`| \`${name}\` | ${type} |`);
    }
  });

  test("documents every kind with every field, each described", () => {
    expect(kinds().length).toBeGreaterThanOrEqual(4);
    for (const def of kinds()) {
      const section = sections.get(`\`${def.kind}\``);
      if (!section) throw new Error(`no section for kind ${def.kind}`);
      // Top-level keys straight from zod, independent of the JSON Schema walk.
      const shape = (def.spec as unknown as { shape?: Record<string, unknown> }).shape ?? {};
      for (const key of Object.keys(shape)) expect(section).toContain(`| \`${key}\` |`);
      for (const f of kindFields(def)) {
        expect(section).toContain(`| \`${f.path}\` |`);
        if (!f.description) throw new Error(`${def.kind} spec.${f.path} has no .describe() text`);
      }
    }
  });

  test("only the region between the markers is rewritten", () => {
    const readme = "# x\n<!-- reference:start -->\nold\n<!-- reference:end -->\n## after\n";
    expect(writeRegion(readme, "new")).toBe("# x\n<!-- reference:start -->\nnew\n<!-- reference:end -->\n## after\n");
    expect(() => writeRegion("# no markers", "new")).toThrow("needs <!-- reference:start -->");
  });
});

describe("fields", () => {
  test("types, defaults, required and nesting from a zod schema", () => {
    const schema = z.strictObject({
      name: z.string().describe("n"),
      mode: z.enum(["a", "b"]).default("a").describe("m"),
      wait: Duration.prefault("5s").describe("w"),
      ports: z.array(z.strictObject({ port: z.int().min(1).max(9).describe("p") })).min(1).optional().describe("ps"),
      nested: z.strictObject({ on: z.boolean().default(true).describe("o") }).prefault({}).describe("x"),
      tags: z.record(z.string(), z.string()).optional().describe("t"),
    });
    expect(fields(inputSchema(schema))).toEqual([
      { path: "name", type: "string", required: true, description: "n" },
      { path: "mode", type: "`a` | `b`", default: "a", required: false, description: "m" },
      { path: "wait", type: "duration", default: "5s", required: false, description: "w" },
      { path: "ports", type: "list of object (at least 1)", required: false, description: "ps" },
      { path: "ports[].port", type: "integer 1–9", required: true, description: "p" },
      { path: "nested", type: "object", default: {}, required: false, description: "x" },
      { path: "nested.on", type: "boolean", default: true, required: false, description: "o" },
      { path: "tags", type: "map of string", required: false, description: "t" },
    ]);
  });
});

describe("markdown", () => {
  test("prose shows as written: no HTML, emphasis, lists or broken tables", () => {
    expect(text("certs/<ns>/<svc>, *.yaml, FILE|DIR, _x_, snake_case")).toBe("certs/\\<ns\\>/\\<svc\\>, \\*.yaml, FILE\\|DIR, \\_x\\_, snake_case");
    expect(lines("one\n- two\n3. three\n\nnext")).toBe("one\\\n\\- two\\\n3\\. three\n\nnext");
    expect(code("FILE|DIR", true)).toBe("`FILE\\|DIR`");
    expect(code("a`b")).toBe("`` a`b ``");
  });
});
