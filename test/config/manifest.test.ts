import { describe, expect, test } from "bun:test";
import { z } from "zod";
import { API_VERSION, getKind, kinds, Metadata, parseManifest, registerKind, Service } from "../../src/config";
import { doc, errorsOf, manifestOf } from "./helpers";

const SERVICE_SPEC = "  ports: [{name: http, port: 80}]";

describe("envelope", () => {
  test("metadata defaults namespace to default; labels and annotations are kept", () => {
    const m = manifestOf(doc("Service", SERVICE_SPEC, "  name: web\n  labels: {app: web}\n  annotations: {owner: team-a}"));
    expect(m.apiVersion).toBe(API_VERSION);
    expect(m.kind).toBe("Service");
    expect(m.metadata).toEqual({ name: "web", namespace: "default", labels: { app: "web" }, annotations: { owner: "team-a" } });
  });

  test("name and namespace must be DNS labels", () => {
    expect(errorsOf(doc("Service", SERVICE_SPEC, "  name: Web_1\n  namespace: -prod"))).toEqual([
      `m.yaml#0 metadata.name: name "Web_1" must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
      `m.yaml#0 metadata.namespace: namespace "-prod" must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
    ]);
  });

  test("metadata: name required, label values must be strings, no unknown fields", () => {
    expect(errorsOf(doc("Service", SERVICE_SPEC, "  labels: {version: 2}\n  nmae: web"))).toEqual([
      "m.yaml#0 metadata.name: required",
      "m.yaml#0 metadata.labels.version: expected string, got number",
      'm.yaml#0 metadata: unknown field "nmae" (did you mean "name"?)',
    ]);
  });

  test("unknown top-level fields are errors", () => {
    expect(errorsOf(doc("Service", SERVICE_SPEC) + "status: {}\n")).toEqual(['m.yaml#0: unknown field "status"']);
  });

  test("apiVersion, metadata and spec are required", () => {
    expect(errorsOf("kind: Service\n")).toEqual([
      "m.yaml#0 apiVersion: required",
      "m.yaml#0 metadata: required",
      "m.yaml#0 spec: required",
    ]);
  });

  test("an unknown apiVersion names the known ones", () => {
    expect(errorsOf(doc("Service", SERVICE_SPEC).replace(API_VERSION, "mesh.dev/v1"))).toEqual([
      'm.yaml#0 apiVersion: unknown apiVersion "mesh.dev/v1"; known: mesh.dev/v1alpha1',
    ]);
  });

  test("an unknown kind names the known ones, and the envelope is still checked", () => {
    expect(errorsOf("apiVersion: mesh.dev/v1alpha1\nkind: Servise\nmetadata: {name: X}\nspec: {}\n")).toEqual([
      'm.yaml#0 kind: unknown kind "Servise" (did you mean "Service"?); known kinds: AuthorizationPolicy, ControlPlaneConfig, DestinationPolicy, HTTPRoute, ProxyConfig, RateLimitPolicy, RequestAuthentication, Service',
      `m.yaml#0 metadata.name: name "X" must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
    ]);
  });

  test("a missing or non-string kind names the known ones", () => {
    expect(errorsOf("apiVersion: mesh.dev/v1alpha1\nmetadata: {name: x}\nspec: {}\n")).toEqual([
      "m.yaml#0 kind: required; known kinds: AuthorizationPolicy, ControlPlaneConfig, DestinationPolicy, HTTPRoute, ProxyConfig, RateLimitPolicy, RequestAuthentication, Service",
    ]);
    expect(errorsOf("apiVersion: mesh.dev/v1alpha1\nkind: 3\nmetadata: {name: x}\nspec: {}\n")).toEqual([
      "m.yaml#0 kind: expected string, got number; known kinds: AuthorizationPolicy, ControlPlaneConfig, DestinationPolicy, HTTPRoute, ProxyConfig, RateLimitPolicy, RequestAuthentication, Service",
    ]);
  });
});

describe("parseManifest", () => {
  test("empty and non-object documents", () => {
    expect(parseManifest(null)).toEqual({ ok: false, issues: [{ path: "", message: "empty document" }] });
    expect(parseManifest([1])).toEqual({
      ok: false,
      issues: [{ path: "", message: "expected a manifest (an object with apiVersion, kind, metadata and spec), got array" }],
    });
  });

  test("dispatches on kind", () => {
    const result = parseManifest({ apiVersion: API_VERSION, kind: "Service", metadata: { name: "a" }, spec: { ports: [{ name: "p", port: 1 }] } });
    expect(result.ok && Service.is(result.manifest) && result.manifest.spec.identity).toBe("a");
  });
});

describe("registry", () => {
  test("lists the built-in kinds, sorted, each with a description and spec schema", () => {
    expect(kinds().map((k) => k.kind)).toEqual(["AuthorizationPolicy", "ControlPlaneConfig", "DestinationPolicy", "HTTPRoute", "ProxyConfig", "RateLimitPolicy", "RequestAuthentication", "Service"]);
    for (const k of kinds()) {
      expect(k.description.length).toBeGreaterThan(0);
      expect(k.spec.description?.length).toBeGreaterThan(0);
    }
    expect(getKind("Service")).toBe(Service as never);
    expect(getKind("Nope")).toBeUndefined();
  });

  // The README's reference is generated from these descriptions: none may be missing.
  test("every field of every kind, and of metadata, has a description", () => {
    const undescribed: string[] = [];
    const visit = (schema: z.ZodType, path: string) => {
      let inner: z.ZodType = schema;
      // Unwrap optional/default/prefault/pipe/array wrappers to reach nested objects.
      for (;;) {
        const def = (inner as unknown as { _zod: { def: { innerType?: z.ZodType; in?: z.ZodType; element?: z.ZodType } } })._zod.def;
        const next = def.innerType ?? def.in ?? def.element;
        if (!next) break;
        inner = next;
      }
      if (inner instanceof z.ZodObject)
        for (const [key, field] of Object.entries(inner.shape as Record<string, z.ZodType>)) {
          if (!field.description) undescribed.push(`${path}.${key}`);
          visit(field, `${path}.${key}`);
        }
    };
    visit(Metadata, "metadata");
    for (const k of kinds()) visit(k.spec, `${k.kind}.spec`);
    expect(undescribed).toEqual([]);
  });

  // Cross-field checks run beside other errors: they must never trip over a field of the wrong type.
  test("a wrong type anywhere is an error, never a crash; a section's names it", () => {
    const unwrap = (schema: z.ZodType): z.ZodType => {
      let inner = schema;
      for (;;) {
        const def = (inner as unknown as { _zod: { def: { innerType?: z.ZodType; in?: z.ZodType } } })._zod.def;
        const next = def.innerType ?? def.in;
        if (!next) return inner;
        inner = next;
      }
    };
    /** Every field under `schema`, and every object in an array: its path, whether it is a section (object or array), and how to build a spec with `value` there. */
    const fields: { path: string; section: boolean; at: (value: unknown) => unknown }[] = [];
    const visit = (schema: z.ZodType, path: string, at: (value: unknown) => unknown) => {
      const inner = unwrap(schema);
      if (inner instanceof z.ZodObject)
        for (const [key, field] of Object.entries(inner.shape as Record<string, z.ZodType>)) {
          const f = unwrap(field);
          const here = (value: unknown) => at({ [key]: value });
          fields.push({ path: `${path}.${key}`, section: f instanceof z.ZodObject || f instanceof z.ZodArray, at: here });
          visit(f, `${path}.${key}`, here);
        }
      if (inner instanceof z.ZodArray) {
        const element = (value: unknown) => at([value]);
        fields.push({ path: `${path}[0]`, section: unwrap(inner.element as z.ZodType) instanceof z.ZodObject, at: element });
        visit(inner.element as z.ZodType, `${path}[0]`, element);
      }
    };
    for (const k of kinds()) visit(k.spec, "spec", (spec) => ({ apiVersion: API_VERSION, kind: k.kind, metadata: { name: "x" }, spec }));
    expect(fields.filter((f) => f.section).length).toBeGreaterThan(40);
    const faults: string[] = [];
    for (const { path, section, at } of fields)
      for (const bad of [null, 7, "x", [], {}, true]) {
        let parsed: ReturnType<typeof parseManifest>;
        try {
          parsed = parseManifest(at(bad));
        } catch (err) {
          faults.push(`${path} = ${JSON.stringify(bad)} threw ${(err as Error).message.split("\n")[0]}`);
          continue;
        }
        if (section && (bad === null || typeof bad !== "object") && !(!parsed.ok && parsed.issues.some((i) => i.path === path && i.message.startsWith("expected"))))
          faults.push(`${path} = ${JSON.stringify(bad)}: no error names it`);
      }
    expect(faults).toEqual([]);
  });

  test("rejects a duplicate or badly named kind", () => {
    expect(() => registerKind({ kind: "Service", spec: z.strictObject({}), description: "again" })).toThrow('kind "Service" is registered twice');
    expect(() => registerKind({ kind: "lowercase", spec: z.strictObject({}), description: "x" })).toThrow('kind "lowercase" must be UpperCamelCase');
  });

  // In a child process, so the extra kind does not leak into other tests' "known kinds".
  test("a registered kind loads through the same loader", () => {
    const script = `
      import { z } from "zod";
      import { registerKind, parseManifestText, formatManifestError } from "./src/config";
      const Widget = registerKind({ kind: "Widget", description: "A test kind.", spec: z.strictObject({ size: z.int().min(1) }) });
      const ok = parseManifestText("apiVersion: mesh.dev/v1alpha1\\nkind: Widget\\nmetadata: {name: w}\\nspec: {size: 2}\\n", "w.yaml");
      const bad = parseManifestText("apiVersion: mesh.dev/v1alpha1\\nkind: Nope\\nmetadata: {name: w}\\nspec: {size: 0}\\n", "w.yaml");
      console.log(JSON.stringify([Widget.is(ok.manifests[0].manifest) && ok.manifests[0].manifest.spec.size, bad.errors.map(formatManifestError)]));
    `;
    const child = Bun.spawnSync([process.execPath, "-e", script], { cwd: `${import.meta.dir}/../..` });
    expect(child.stderr.toString()).toBe("");
    expect(JSON.parse(child.stdout.toString())).toEqual([
      2,
      ['w.yaml#0 kind: unknown kind "Nope"; known kinds: AuthorizationPolicy, ControlPlaneConfig, DestinationPolicy, HTTPRoute, ProxyConfig, RateLimitPolicy, RequestAuthentication, Service, Widget'],
    ]);
  });
});
