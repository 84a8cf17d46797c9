import { describe, expect, test } from "bun:test";
import { z } from "zod";
import { check, formatPath } from "../../src/config/issues";
import { closest } from "../../src/config/suggest";

describe("formatPath", () => {
  test("dots for names, brackets for indexes, quotes for odd keys", () => {
    expect(formatPath(["spec", "rules", 0, "backendRefs", 1, "weight"])).toBe("spec.rules[0].backendRefs[1].weight");
    expect(formatPath(["metadata", "labels", "app.kubernetes.io/name"])).toBe('metadata.labels["app.kubernetes.io/name"]');
    expect(formatPath([])).toBe("");
    expect(formatPath([0, "a"])).toBe("[0].a");
  });
});

describe("human messages", () => {
  const messages = (schema: z.ZodType, input: unknown) => {
    const result = check(schema, input);
    return result.ok ? [] : result.issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message));
  };

  test("missing is 'required', wrong type names both types", () => {
    const S = z.strictObject({ a: z.string(), b: z.number(), c: z.array(z.string()), d: z.int() });
    expect(messages(S, { b: "1", c: {}, d: 1.5 })).toEqual([
      "a: required",
      "b: expected number, got string",
      "c: expected array, got object",
      "d: expected integer, got number",
    ]);
  });

  test("bounds", () => {
    expect(messages(z.number().min(0), -1)).toEqual(["expected number ≥ 0"]);
    expect(messages(z.number().gt(0), 0)).toEqual(["expected number > 0"]);
    expect(messages(z.int().max(10), 11)).toEqual(["expected integer ≤ 10"]);
    expect(messages(z.string().min(1), "")).toEqual(["must not be empty"]);
    expect(messages(z.string().min(3), "ab")).toEqual(["expected at least 3 characters"]);
    expect(messages(z.string().max(2), "abc")).toEqual(["expected at most 2 characters"]);
    expect(messages(z.array(z.number()).min(1), [])).toEqual(["expected at least 1 item"]);
    expect(messages(z.array(z.number()).max(1), [1, 2])).toEqual(["expected at most 1 item"]);
  });

  test("enums and literals", () => {
    expect(messages(z.enum(["http", "tcp"]), "udp")).toEqual(["expected one of http, tcp"]);
    expect(messages(z.literal("x"), "y")).toEqual(['expected "x"']);
  });

  test("each unknown field is its own error, with a hint for near misses", () => {
    const S = z.strictObject({ weight: z.number(), zone: z.string().optional() });
    expect(messages(S, { weight: 1, weigth: 2, colour: "red" })).toEqual([
      'unknown field "weigth" (did you mean "weight"?)',
      'unknown field "colour"',
    ]);
  });

  test("a schema's own message wins over the error map", () => {
    expect(messages(z.string().refine(() => false, "mine"), "a")).toEqual(["mine"]);
  });
});

describe("closest", () => {
  test("counts a swapped pair as one edit and ignores case", () => {
    expect(closest("sepc", ["spec", "metadata"])).toBe("spec");
    expect(closest("TargetPort", ["port", "targetPort"])).toBe("targetPort");
    expect(closest("colour", ["weight", "zone"])).toBeUndefined();
    expect(closest("proto", ["port", "protocol"])).toBe("protocol");
  });
});
