import { describe, expect, test } from "bun:test";
import { parseArgs, type CommandSpec } from "../../src/cli/args.ts";
import { UsageError } from "../../src/core/errors.ts";
import { mesh } from "../helpers/cli.ts";

const spec: CommandSpec = {
  name: "demo",
  summary: "x",
  flags: [
    { name: "name", type: "string", description: "", required: true },
    { name: "tag", short: "t", type: "strings", description: "" },
    { name: "force", type: "boolean", description: "" },
    { name: "ttl", type: "string", description: "", default: "24h" },
  ],
  positionals: [{ name: "FILE", description: "" }],
};

describe("parseArgs", () => {
  test("long, short, = and repeatable forms, defaults and positionals", () => {
    const p = parseArgs(spec, ["--name=a", "-t", "x", "--tag", "y", "--force", "file.pem"], "demo");
    expect(p.flags).toMatchObject({ name: "a", tag: ["x", "y"], force: true, ttl: "24h" });
    expect(p.positionals).toEqual(["file.pem"]);
  });
  test("everything after -- passes through untouched", () => {
    expect(parseArgs(spec, ["--name", "a", "--", "--not-a-flag"], "demo").passthrough).toEqual(["--not-a-flag"]);
  });
  test.each([
    [["--name", "a", "--nope"], "unknown flag --nope"],
    [["--name"], "--name needs a value"],
    [["--name", "a", "--name", "b"], "--name given more than once"],
    [[], "--name is required"],
    [["--name", "a", "one", "two"], 'unexpected argument "two"'],
    [["--name", "a", "--force=maybe"], "--force takes no value"],
  ])("%p is a usage error: %s", (argv, message) => {
    expect(() => parseArgs(spec, argv, "demo")).toThrow(UsageError);
    expect(() => parseArgs(spec, argv, "demo")).toThrow(message);
  });
});

describe("mesh dispatch", () => {
  test("no command prints usage and exits 64", async () => {
    const r = await mesh();
    expect(r.code).toBe(64);
    expect(r.err).toContain("error: mesh: no command given");
    expect(r.err).toContain("Usage: mesh <command>");
  });
  test("mesh --version prints what mesh version prints", async () => {
    const flag = await mesh("--version");
    const command = await mesh("version");
    expect(flag.code).toBe(0);
    expect(flag.out).toMatch(/^mesh \S+ \(commit \S+, bun /);
    expect(flag.out).toBe(command.out);
  });
  test("--help on every command exits 0 and lists its flags", async () => {
    for (const argv of [["--help"], ["ca", "--help"], ["ca", "issue", "--help"], ["validate", "-h"], ["ca", "rotate", "--help"]]) {
      const r = await mesh(...argv);
      expect(r.code).toBe(0);
      expect(r.out).toContain("Usage: mesh");
      expect(r.out).toContain("--log-level");
    }
  });
  test("unknown subcommand of ca is named with the ca usage", async () => {
    const r = await mesh("ca", "mint");
    expect(r.code).toBe(64);
    expect(r.err).toContain('mesh ca: unknown command "mint"');
    expect(r.err).toContain("Usage: mesh ca <command>");
  });
  test("a bad --log-level is named", async () => {
    const r = await mesh("version", "--log-level", "chatty");
    expect(r.code).toBe(64);
    expect(r.err).toContain('--log-level: "chatty" is not one of');
  });
});
