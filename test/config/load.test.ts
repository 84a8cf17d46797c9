import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmod, mkdir, symlink } from "node:fs/promises";
import { relative } from "node:path";
import { formatManifestError, loadManifests, type LoadResult } from "../../src/config";
import { scratch, type Scratch } from "./helpers";

const svc = (name: string, ns = "default") =>
  `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n  ports: [{name: http, port: 80}]\n`;
const svcJson = (name: string) => ({ apiVersion: "mesh.dev/v1alpha1", kind: "Service", metadata: { name }, spec: { ports: [{ name: "http", port: 80 }] } });

let s: Scratch;
beforeEach(async () => {
  s = await scratch();
});
afterEach(async () => {
  await s.cleanup();
});

const lines = (r: LoadResult) => r.errors.map(formatManifestError);
const names = (r: LoadResult) => r.manifests.map((m) => `${m.file.slice(s.dir.length + 1)}#${m.doc} ${m.manifest.kind}/${m.manifest.metadata.name}`);

describe("formatManifestError", () => {
  test("file#doc path: message, leaving out what is not known", () => {
    const e = { file: "policies/routes.yaml", doc: 2, path: "spec.rules[0].backendRefs[1].weight", message: "expected number ≥ 0" };
    expect(formatManifestError(e)).toBe("policies/routes.yaml#2 spec.rules[0].backendRefs[1].weight: expected number ≥ 0");
    expect(formatManifestError({ ...e, path: "" })).toBe("policies/routes.yaml#2: expected number ≥ 0");
    expect(formatManifestError({ file: "x.yaml", path: "", message: "no documents in file" })).toBe("x.yaml: no documents in file");
  });
});

describe("loadManifests: documents", () => {
  test("multi-document YAML, with a leading --- and comments, indexes documents from 0", async () => {
    const file = await s.write("a.yaml", `# services\n---\n${svc("one")}---\n# second\n${svc("two")}--- # third\n${svc("three")}`);
    const r = await loadManifests([file]);
    expect(lines(r)).toEqual([]);
    expect(names(r)).toEqual(["a.yaml#0 Service/one", "a.yaml#1 Service/two", "a.yaml#2 Service/three"]);
    expect(r.manifests[0]!.file).toBe(file);
  });

  test("a JSON file holds one object or an array of them", async () => {
    const one = await s.write("one.json", JSON.stringify(svcJson("solo")));
    const many = await s.write("many.json", JSON.stringify([svcJson("a"), svcJson("b")]));
    const r = await loadManifests([one, many]);
    expect(lines(r)).toEqual([]);
    expect(names(r)).toEqual(["one.json#0 Service/solo", "many.json#0 Service/a", "many.json#1 Service/b"]);
  });

  test("CRLF line endings and a byte-order mark are fine", async () => {
    const file = await s.write("w.yaml", `\uFEFF${svc("a")}---\n${svc("b")}`.replaceAll("\n", "\r\n"));
    expect(names(await loadManifests([file]))).toEqual(["w.yaml#0 Service/a", "w.yaml#1 Service/b"]);
  });

  test("a file named explicitly is read as YAML whatever its extension", async () => {
    const file = await s.write("services.txt", svc("txt"));
    expect(names(await loadManifests([file]))).toEqual(["services.txt#0 Service/txt"]);
  });

  test("the file is named as given, e.g. relative to the working directory", async () => {
    const file = await s.write("bad.yaml", "kind: Service\n");
    const rel = relative(process.cwd(), file);
    expect(lines(await loadManifests([rel]))[0]).toBe(`${rel}#0 apiVersion: required`);
  });
});

describe("loadManifests: directories", () => {
  test("walks recursively, sorted, for *.yaml, *.yml and *.json; skips hidden entries and other files", async () => {
    await s.write("b.yaml", svc("b"));
    await s.write("a.yml", svc("a"));
    await s.write("sub/c.json", JSON.stringify(svcJson("c")));
    await s.write("sub/deeper/d.YAML", svc("d"));
    await s.write("README.md", "not a manifest");
    await s.write(".hidden.yaml", "not: read");
    await s.write(".git/x.yaml", "not: read");
    const r = await loadManifests([s.dir]);
    expect(lines(r)).toEqual([]);
    expect(names(r)).toEqual(["a.yml#0 Service/a", "b.yaml#0 Service/b", "sub/c.json#0 Service/c", "sub/deeper/d.YAML#0 Service/d"]);
    expect(r.manifests[0]!.file).toBe(`${s.dir}/a.yml`);
  });

  test("a file reached twice (directory and file) is loaded once", async () => {
    const file = await s.write("a.yaml", svc("a"));
    const r = await loadManifests([s.dir, file]);
    expect(lines(r)).toEqual([]);
    expect(names(r)).toEqual(["a.yaml#0 Service/a"]);
  });

  test("a symlink loop is walked once", async () => {
    await s.write("d/a.yaml", svc("a"));
    await symlink("..", s.path("d/up"));
    const r = await loadManifests([s.path("d")]);
    expect(lines(r)).toEqual([]);
    expect(names(r)).toEqual(["d/a.yaml#0 Service/a"]);
  });
});

describe("loadManifests: errors", () => {
  test("a missing path", async () => {
    const missing = s.path("nope.yaml");
    expect(lines(await loadManifests([missing]))).toEqual([`${missing}: no such file or directory`]);
  });

  test("a directory with no manifests", async () => {
    await mkdir(s.path("empty"));
    await s.write("docs/readme.md", "# hi");
    expect(lines(await loadManifests([s.path("empty"), s.path("docs")]))).toEqual([
      `${s.path("empty")}: no *.yaml, *.yml, *.json files in directory`,
      `${s.path("docs")}: no *.yaml, *.yml, *.json files in directory`,
    ]);
  });

  test("an unreadable file: a dangling symlink", async () => {
    await symlink(s.path("gone.yaml"), s.path("link.yaml"));
    expect(lines(await loadManifests([s.dir]))).toEqual([`${s.path("link.yaml")}: cannot read file: no such file or directory`]);
  });

  test.skipIf(process.getuid?.() === 0)("an unreadable file: no permission", async () => {
    const file = await s.write("secret.yaml", svc("a"));
    await chmod(file, 0o000);
    expect(lines(await loadManifests([file]))).toEqual([`${file}: cannot read file: permission denied`]);
  });

  test("a YAML syntax error names the file, document and line; other documents are still checked", async () => {
    const text = `${svc("ok")}---\napiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: x\n    bad: indent\n---\n${svc("Also_bad")}`;
    const file = await s.write("s.yaml", text);
    const r = await loadManifests([file]);
    expect(lines(r)).toEqual([
      `${file}#1: YAML syntax error at line 11: Unexpected token`,
      `${file}#2 metadata.name: name "Also_bad" must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
    ]);
    expect(names(r)).toEqual(["s.yaml#0 Service/ok"]);
  });

  test("a syntax error after a multi-line flow list is placed on its own line", async () => {
    const file = await s.write("f.yaml", "a: [\n  1,\n  2,\n]\nb: @oops\n");
    expect(lines(await loadManifests([file]))).toEqual([`${file}#0: YAML syntax error at line 5: Unexpected token`]);
  });

  test("a JSON syntax error", async () => {
    const file = await s.write("bad.json", '{"kind": "Service",}');
    expect(lines(await loadManifests([file]))).toEqual([`${file}: invalid JSON at line 1, column 19: trailing comma before '}'`]);
  });

  test("empty files and empty documents", async () => {
    const empty = await s.write("empty.yaml", "");
    const comments = await s.write("comments.yaml", "# nothing here\n\n");
    const emptyJson = await s.write("empty.json", "[]");
    const emptyDoc = await s.write("doc.yaml", `${svc("a")}---\n# forgot this one\n---\n${svc("b")}`);
    expect(lines(await loadManifests([empty, comments, emptyJson, emptyDoc]))).toEqual([
      `${empty}: no documents in file`,
      `${comments}: no documents in file`,
      `${emptyJson}: no documents in file`,
      `${emptyDoc}#1: empty document`,
    ]);
  });

  test("non-object documents", async () => {
    const file = await s.write("n.yaml", "- a\n- b\n---\njust words\n---\n42\n");
    const json = await s.write("n.json", '[1, null, "x"]');
    const what = "expected a manifest (an object with apiVersion, kind, metadata and spec), got";
    expect(lines(await loadManifests([file, json]))).toEqual([
      `${file}#0: ${what} array`,
      `${file}#1: ${what} string`,
      `${file}#2: ${what} number`,
      `${json}#0: ${what} number`,
      `${json}#1: empty document`,
      `${json}#2: ${what} string`,
    ]);
  });

  test("a duplicate kind/namespace/name names both places, even when the second is otherwise invalid", async () => {
    const a = await s.write("a.yaml", `${svc("web")}---\n${svc("web", "other")}`);
    const b = await s.write("b.yaml", `${svc("api")}---\n${svc("web").replace("port: 80", "port: 0")}`);
    const c = await s.write("c.json", JSON.stringify(svcJson("api")));
    expect(lines(await loadManifests([a, b, c]))).toEqual([
      `${b}#1 spec.ports[0].port: expected port 1-65535`,
      `${b}#1 metadata.name: duplicate Service "default/web", first defined at ${a}#0`,
      `${c}#0 metadata.name: duplicate Service "default/api", first defined at ${b}#0`,
    ]);
  });

  test("the same name in different kinds is no duplicate", async () => {
    const file = await s.write(
      "x.yaml",
      `${svc("web")}---\napiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: web}\nspec: {upstream: "http://127.0.0.1:8080"}\n`,
    );
    expect(lines(await loadManifests([file]))).toEqual([]);
  });

  test("every error in every document and file is reported at once, in order", async () => {
    const missing = s.path("missing");
    const one = await s.write("one.yaml", [
      "apiVersion: mesh.dev/v1alpha1",
      "kind: Service",
      "metadata: {name: web}",
      "spec:",
      "  ports:",
      "    - {name: http, port: 80, protocol: htp}",
      "  endpoints:",
      "    - {address: 10.0.0.1, port: 8080, weigth: 2, weight: -1}",
      "---",
      "apiVersion: mesh.dev/v1alpha1",
      "kind: Route",
      "metadata: {name: r}",
      "spec: {}",
      "",
    ].join("\n"));
    const two = await s.write("two.json", JSON.stringify({ ...svcJson("db"), spec: { ports: [] } }));
    const r = await loadManifests([one, missing, two]);
    expect(lines(r)).toEqual([
      `${one}#0 spec.ports[0].protocol: expected one of http, http2, grpc, tcp`,
      `${one}#0 spec.endpoints[0].weight: expected number ≥ 0`,
      `${one}#0 spec.endpoints[0]: unknown field "weigth" (did you mean "weight"?)`,
      `${one}#1 kind: unknown kind "Route"; known kinds: AuthorizationPolicy, ControlPlaneConfig, DestinationPolicy, HTTPRoute, ProxyConfig, RateLimitPolicy, RequestAuthentication, Service`,
      `${missing}: no such file or directory`,
      `${two}#0 spec.ports: expected at least 1 item`,
    ]);
    expect(r.manifests).toEqual([]);
    expect(r.errors[0]).toEqual({ file: one, doc: 0, path: "spec.ports[0].protocol", message: "expected one of http, http2, grpc, tcp" });
  });
});

describe("loadManifests: what a file must be", () => {
  test("a file over 4 MiB is refused for its size, naming the file, its size and the limit", async () => {
    const file = await s.write("big.yaml", `${svc("a")}# ${"x".repeat(4 << 20)}\n`);
    const size = Bun.file(file).size;
    expect(lines(await loadManifests([file]))).toEqual([`${file}: too large: ${size} bytes (4.1 MiB); a manifest file may have at most 4194304 bytes (4 MiB)`]);
  });

  test("a file that is not UTF-8 is refused at its first bad byte; a UTF-16 file is named so", async () => {
    const latin1 = s.path("latin1.yaml");
    await Bun.write(latin1, Buffer.concat([Buffer.from("kind: Service\nmetadata: {name: Jos"), Buffer.from([0xe9]), Buffer.from("}\n")]));
    const utf16 = s.path("utf16.yaml");
    await Bun.write(utf16, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(svc("a"), "utf16le")]));
    const utf16be = s.path("utf16be.yaml");
    await Bun.write(utf16be, Buffer.from([0xfe, 0xff, 0, 0x61]));
    expect(lines(await loadManifests([latin1, utf16, utf16be]))).toEqual([
      `${latin1}: not valid UTF-8: byte 0xE9 at byte offset 34 (line 2)`,
      `${utf16}: is UTF-16 (little-endian, byte order mark FF FE); save it as UTF-8`,
      `${utf16be}: is UTF-16 (big-endian, byte order mark FE FF); save it as UTF-8`,
    ]);
  });

  test("a repeated key is refused, naming the mapping, the key and both lines; the document's other problems still show", async () => {
    const text = `${svc("ok")}---\n${svc("web").replace("spec:\n", "spec:\n  ports: []\n").replace("port: 80}", "port: 0, name: web}")}`;
    const file = await s.write("dup.yaml", text);
    const r = await loadManifests([file]);
    expect(lines(r)).toEqual([
      `${file}#1 spec: duplicate key "ports" at line 12 (first at line 11)`,
      `${file}#1 spec.ports[0]: duplicate key "name" at line 12`,
      `${file}#1 spec.ports[0].port: expected port 1-65535`,
    ]);
    expect(names(r)).toEqual(["dup.yaml#0 Service/ok"]);
  });

  test("a repeated key in a JSON manifest is refused too, in a single object and in an array of them", async () => {
    const one = await s.write("dup.json", `{"apiVersion": "mesh.dev/v1alpha1", "kind": "Service",\n "metadata": {"name": "a", "name": "b"},\n "spec": {"ports": [{"name": "http", "port": 80}]}}`);
    const many = await s.write("dups.json", `[\n {"apiVersion": "mesh.dev/v1alpha1", "kind": "Service", "metadata": {"name": "c"}, "spec": {"ports": [{"name": "http", "port": 80}]}},\n {"apiVersion": "mesh.dev/v1alpha1", "kind": "Service", "metadata": {"name": "d"},\n  "spec": {"ports": [{"name": "http", "port": 80, "port": 81}]}}\n]`);
    const r = await loadManifests([one, many]);
    expect(lines(r)).toEqual([`${one}#0 metadata: duplicate key "name" at line 2`, `${many}#1 spec.ports[0]: duplicate key "port" at line 4`]);
    expect(names(r)).toEqual(["dups.json#0 Service/c"]);
  });

  test("a syntax error at the top of a large document is placed without re-parsing every prefix", async () => {
    const big = `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: [unclosed\n${"# comment\n".repeat(50_000)}`;
    const file = await s.write("big-error.yaml", big);
    const started = performance.now();
    expect(lines(await loadManifests([file]))).toEqual([`${file}#0: YAML syntax error at line 3: Unexpected token`]);
    expect(performance.now() - started).toBeLessThan(2000);
  });

  test("a multi-line quoted scalar or flow collection before a syntax error is not blamed for it", async () => {
    const file = await s.write("q.yaml", 'a: "one\n  two"\nb: {x: 1,\n  y: 2}\nc: [\n  3]\nd: @oops\n');
    expect(lines(await loadManifests([file]))).toEqual([`${file}#0: YAML syntax error at line 7: Unexpected token`]);
  });
});
