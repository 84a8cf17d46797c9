/** jsonSyntaxError: the line, column and cause of a JSON text's first syntax error, which Bun's JSON.parse does not give. */
import { describe, expect, test } from "bun:test";
import { jsonSyntaxError } from "../../src/config/json-syntax.ts";
import { splitDocuments } from "../../src/config/documents.ts";

const MANIFEST = '{\n  "apiVersion": "mesh.dev/v1alpha1",\n  "kind": "Service",\n  "metadata": {"name": "web", "namespace": "shop"},\n  "spec": {"ports": [{"name": "http", "port": 80, "weight": -1.5e+2}], "note": "caf\\u00e9 \\"x\\"", "on": true, "off": false, "none": null}\n}\n';

describe("jsonSyntaxError", () => {
  test.each([
    ["a trailing comma, at the comma", '{\n  "a": 1,\n}\n', 2, 9, "trailing comma before '}'"],
    ["a trailing comma in a list", '{"a": [1, 2,]}', 1, 12, "trailing comma before ']'"],
    ["a missing brace at the end of the file", '{\n  "a": {"b": 1}\n', 3, 1, "the file ends before the '{' at line 1, column 1 is closed"],
    ["an unquoted key", '{\n  kind: "Service"\n}', 2, 3, 'expected a property name in double quotes, got "kind"'],
    ["a key in single quotes", "{'a': 1}", 1, 2, `expected a property name in double quotes, got "'" (strings take double quotes)`],
    ["a bad token on line 5", '{\n  "a": 1,\n  "b": 2,\n  "c": 3,\n  "d": tru\n}\n', 5, 8, 'expected a value, got "tru"'],
    ["a list closed by a brace", '{"spec": {"ports": [}\n}', 1, 21, "'}' does not close the '[' at line 1, column 20"],
    ["a missing comma", '{"a": 1\n "b": 2}', 2, 2, "expected ',' or '}', got '\"'"],
    ["a missing colon", '{"a" 1}', 1, 6, "expected ':' after the property name, got '1'"],
    ["a number with a leading zero", '{"a": 01}', 1, 7, 'invalid number "01"'],
    ["a bad escape", '{"a": "x\\qy"}', 1, 9, "invalid escape \\q in a string"],
    ["a short \\u escape", '{"a": "\\u12"}', 1, 8, "invalid escape \\u12 in a string"],
    ["a string broken by a line end", '{"a": "x\ny"}', 1, 7, "string not closed on its line"],
    ["a tab inside a string", '{"a": "\t"}', 1, 8, "control character U+0009 in a string (escape it)"],
    ["a comment", '{"a": 1} // why', 1, 10, "text after the end of the JSON value: '/' (JSON has no comments)"],
    ["two values", "[1]\n[2]", 2, 1, "text after the end of the JSON value: '['"],
    ["columns counted in characters", '{"é": ✓}', 1, 7, "expected a value, got '✓'"],
  ])("%s", (_what, text, line, column, reason) => {
    expect(() => JSON.parse(text)).toThrow();
    expect(jsonSyntaxError(text)).toEqual({ line, column, reason });
  });

  test("deep nesting is scanned without recursion", () => {
    expect(jsonSyntaxError("[".repeat(200_000))).toEqual({ line: 1, column: 200_001, reason: "the file ends before the '[' at line 1, column 200000 is closed" });
  });

  test("finds an error exactly when JSON.parse does, for every one-character deletion or insertion in a manifest", () => {
    const parses = (t: string) => {
      try {
        JSON.parse(t);
        return true;
      } catch {
        return false;
      }
    };
    expect(jsonSyntaxError(MANIFEST)).toBeUndefined();
    for (let i = 0; i <= MANIFEST.length; i++) {
      const variants = [MANIFEST.slice(0, i) + MANIFEST.slice(i + 1), ...[",", "}", "]", '"', ":", "0", "-", "e", "\\", " ", "x", "\t"].map((c) => MANIFEST.slice(0, i) + c + MANIFEST.slice(i))];
      for (const v of variants) expect({ v, found: jsonSyntaxError(v) !== undefined }).toEqual({ v, found: !parses(v) });
    }
  });
});

describe("splitDocuments of a JSON file", () => {
  test("names the line and column of a syntax error", () => {
    expect(splitDocuments('{"kind": "Service",\n "spec": {"ports": [}\n}\n', "bad.json")).toEqual({ ok: false, error: "invalid JSON at line 2, column 21: '}' does not close the '[' at line 2, column 20" });
  });
});
