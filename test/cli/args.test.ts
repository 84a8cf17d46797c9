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
  test("everything after -- passes through untouched, for a command that takes a command there", () => {
    const run: CommandSpec = { ...spec, passthrough: true };
    expect(parseArgs(run, ["--name", "a", "--", "--not-a-flag"], "demo")).toMatchObject({ positionals: [], passthrough: ["--not-a-flag"] });
  });
  test("otherwise -- ends the flags: what follows is positionals", () => {
    expect(parseArgs(spec, ["--name", "a", "--", "-x.yaml"], "demo")).toMatchObject({ positionals: ["-x.yaml"], passthrough: [] });
    expect(() => parseArgs(spec, ["--name", "a", "--", "a", "b"], "demo")).toThrow('unexpected argument "b"');
  });
  test.each([
    [["--", "--trust-domain", "x"], 'demo: unexpected "--trust-domain x" after --: this command takes no arguments (flags go before --)'],
    [["--", "sh", "-c", "true"], "demo: unexpected \"sh -c true\" after --: this command takes no arguments (only 'mesh run' starts a command given after --)"],
  ])("a command without arguments refuses %p after --, naming it", (argv, message) => {
    const bare: CommandSpec = { name: "demo", summary: "x" };
    expect(() => parseArgs(bare, argv, "demo")).toThrow(UsageError);
    expect(() => parseArgs(bare, argv, "demo")).toThrow(message);
    expect(parseArgs(bare, ["--"], "demo").passthrough).toEqual([]);
  });
  test.each([
    [["--name", "a", "--nope"], "unknown flag --nope"],
    [["--name"], "--name needs a value"],
    [["--name", "a", "--name", "b"], "--name given more than once"],
    [[], "--name is required"],
    [["--name", "a", "one", "two"], 'unexpected argument "two"'],
    [["--name", "a", "--force=maybe"], "--force takes no value"],
    [["--name", ""], "--name has an empty value"],
    [["--name="], "--name has an empty value"],
    [["--name", "a", "-t", ""], "--tag has an empty value"],
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
  test("a timer flag past 596h is refused, naming the flag: setTimeout would fire it at once", async () => {
    const r = await mesh("proxy", "--service", "web", "--upstream", "http://127.0.0.1:8080", "--drain-timeout", "1000h");
    expect(r.code).toBe(64);
    expect(r.err).toContain("--drain-timeout: 1000h is longer than 596h (about 24.8 days), the longest timer the runtime keeps");
  });
  test("flags are checked before a join token is spent: a bad one is a usage error, not a bootstrap's failure", async () => {
    const r = await mesh("proxy", "--service", "web", "--upstream", "http://127.0.0.1:8080", "--control-plane", "https://127.0.0.1:9", "--join-token-file", "/nonexistent", "--stream-idle-timeout", "1000h");
    expect(r.code).toBe(64);
    expect(r.err).toContain("--stream-idle-timeout:");
    expect(r.err).not.toContain("join token not found");
  });
  test("a bad --log-level is named", async () => {
    const r = await mesh("version", "--log-level", "chatty");
    expect(r.code).toBe(64);
    expect(r.err).toContain('--log-level: "chatty" is not one of');
  });
});
