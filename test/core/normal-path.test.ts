/** The one form of a path that authorization matches and the service receives (threats.md: paths in authorization). */
import { describe, expect, test } from "bun:test";
import { isNormalPath, normalTarget, pathOf, PathRefusal } from "../../src/core/normal-path.ts";

const normal = (t: string) => {
  const r = normalTarget(t);
  if (r instanceof PathRefusal) throw new Error(`refused ${t}: ${r.detail}`);
  return r;
};
const refusal = (t: string) => {
  const r = normalTarget(t);
  if (!(r instanceof PathRefusal)) throw new Error(`${t} was not refused: ${r}`);
  return r.detail;
};

describe("normal form", () => {
  test("a path already normal is the very string given", () => {
    for (const t of ["/", "/a", "/v1/charges/42", "/a/b/?x=1", "*", "/a.b/c-d_e~f", "/.well-known/x"]) {
      const s = `${t}`; // a distinct string value with the same text
      expect(normalTarget(s)).toBe(s);
    }
    expect(normal("/.well-known/x")).toBe("/.well-known/x");
  });

  test.each([
    ["/a/../admin", "/admin"],
    ["/a/./admin", "/a/admin"],
    ["/a/%2e%2e/admin", "/admin"],
    ["/a/%2E%2E/admin", "/admin"],
    ["/a/.%2e/admin", "/admin"],
    ["/../../admin", "/admin"],
    ["//admin", "/admin"],
    ["/a//b///c", "/a/b/c"],
    ["/%61dmin", "/admin"],
    ["/%41%44%4d%49%4e", "/ADMIN"],
    ["/a/b/..", "/a/"],
    ["/a/b/.", "/a/b/"],
    ["/a/", "/a/"],
    ["/..", "/"],
    ["/a/%c3%a9", "/a/%C3%A9"],
    ["/a%20b", "/a%20b"],
    ["/a/../b?x=/../y&p=%2F", "/b?x=/../y&p=%2F"],
    ["/%7euser", "/~user"],
  ])("%s → %s", (input, expected) => {
    expect(normal(input)).toBe(expected);
  });

  test.each([
    ["/a%2Fb", "escaped slash"],
    ["/a%2fb", "escaped slash"],
    ["/..%2Fadmin", "escaped slash"],
    ["/a%5Cb", "escaped slash or backslash"],
    ["/a\\b", "backslash"],
    ["/a%00b", "control character"],
    ["/a%0d%0ab", "control character"],
    ["/a%7f", "control character"],
    ["/a%", "two hex digits"],
    ["/a%4", "two hex digits"],
    ["/a%zz", "two hex digits"],
    ["/public/..;/admin", "path parameters"],
    ["/public/.;x/admin", "path parameters"],
    ["/admin;x", "path parameters"],
    ["/v1/intern%61l;jsessionid=1", "path parameters"],
  ])("%s is refused (%s)", (input, why) => {
    expect(refusal(input)).toContain(why);
  });

  test("kept as data (--escaped-slashes keep): %2F and %5C stay escaped, in upper case, one segment with their neighbours", () => {
    const kept = (t: string) => normalTarget(t, true);
    expect(kept("/projects/group%2Fproj/issues")).toBe("/projects/group%2Fproj/issues");
    expect(kept("/projects/group%2fproj")).toBe("/projects/group%2Fproj");
    expect(kept("/a%5cb")).toBe("/a%5Cb");
    // Not a separator, so never half of a dot segment: "..%2Fadmin" is one segment's data.
    expect(kept("/public/..%2Fadmin")).toBe("/public/..%2Fadmin");
    // Everything else is as without it.
    expect(kept("/a/../%61dmin//x%2Fy?q=%2F")).toBe("/admin/x%2Fy?q=%2F");
    for (const t of ["/a\\b", "/a%00b", "/admin;x", "/a%zz"]) expect(kept(t)).toBeInstanceOf(PathRefusal);
  });

  test("a semicolon in the query is the query's business; an escaped one in the path is data", () => {
    expect(normal("/a?b=1;c=2")).toBe("/a?b=1;c=2");
    expect(normal("/a%3Bb")).toBe("/a%3Bb");
  });

  test("pathOf drops the query; isNormalPath says whether a rule's path could ever match", () => {
    expect(pathOf("/a/b?x=1")).toBe("/a/b");
    expect(pathOf("/a/b")).toBe("/a/b");
    expect(isNormalPath("/v1/charges")).toBe(true);
    expect(isNormalPath("/v1//charges")).toBe(false);
    expect(isNormalPath("/%61")).toBe(false);
    expect(isNormalPath("/a?b")).toBe(false);
  });
});
