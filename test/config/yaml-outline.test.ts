import { describe, expect, test } from "bun:test";
import { outlineYaml } from "../../src/config/yaml-outline";

const outline = (text: string) => outlineYaml(text.split("\n"));
const dups = (text: string) => outline(text).duplicates.map((d) => `${d.path || "(doc)"} ${d.key} ${d.line}/${d.firstLine}`);

describe("outlineYaml: repeated keys", () => {
  test("in block mappings, at any depth, named by the mapping's path and both lines", () => {
    expect(dups("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\na: 4\n")).toEqual(["b c 5/3", "(doc) a 6/1"]);
  });

  test("in sequence items, compact (`- a: 1`) or not, and in indentless sequences", () => {
    expect(dups("items:\n- a: 1\n  a: 2\n- a: 3\n-\n  b: 1\n  b: 2\nnext: 1\nnext: 2\n")).toEqual(["items[0] a 3/2", "items[2] b 7/6", "(doc) next 9/8"]);
    expect(dups("- - x: 1\n  - x: 2\n    x: 3\n")).toEqual(["[0][1] x 3/2"]);
  });

  test("in flow mappings, also over several lines and inside flow sequences", () => {
    expect(dups("ports: [{name: a, port: 1, name: b}]\nm: {k: 1,\n  k: 2}\n")).toEqual(["ports[0] name 1/1", "m k 3/2"]);
  });

  test("quoted and plain spellings of a key are the same key, as in the parsed object", () => {
    expect(dups(`a: 1\n"a": 2\n'b': 1\nb: 2\n"\\u0063": 1\nc: 2\n`)).toEqual(["(doc) a 2/1", "(doc) b 4/3", "(doc) c 6/5"]);
    expect(dups('{"a": 1, "b": {"c": 2, "c": 3}}')).toEqual(["b c 1/1"]);
  });

  test("none where keys only look alike: in other mappings, in block or quoted scalars, comments, merge keys", () => {
    const text = [
      "a: 1",
      "b:",
      "  a: 2",
      "list:",
      "  - a: 1",
      "  - a: 2",
      "text: |",
      "  a: 1",
      "  a: 1",
      "folded: >-",
      "  x: 1",
      "",
      "  x: 1",
      'quoted: "c: 1',
      '  c: 1"',
      "single: 'it''s: 1",
      "  it''s: 1'",
      "# a: 3",
      "url: http://a:b",
      "base: &base {k: 1}",
      "derived:",
      "  <<: *base",
      "  k: 2",
      "tagged: !!str a",
      "anchored: &x",
      "  a: 1",
    ].join("\n");
    expect(() => Bun.YAML.parse(text)).not.toThrow();
    expect(dups(text)).toEqual([]);
  });

  test("after a complex key (`? `) it does not guess", () => {
    expect(dups("? [a, b]\n: 1\nx: 1\nx: 2\n")).toEqual([]);
  });
});

describe("outlineYaml: where a prefix may end", () => {
  test("after every line, except inside a flow collection or a quoted scalar; block scalars may be cut", () => {
    expect(outline('a: [1,\n  2]\nb: "x\n  y"\nc: |\n  text\nd: 1').cuts).toEqual([0, 2, 4, 5, 6, 7]);
  });

  test("an unclosed bracket leaves no cut after it, and nothing throws on broken text", () => {
    expect(outline("a: 1\nb: [unclosed\n# c\n# d").cuts).toEqual([0, 1]);
    expect(outline("]]]: {{\n'\n\"\\").cuts).toEqual([0, 1]);
  });
});
