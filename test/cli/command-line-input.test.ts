/**
 * The command line refuses what it would otherwise drop or misread, naming it: global flags
 * before the command, words after `--`, a port that cannot be dialled, counts past 2^53,
 * the admin client's URL, token file and namespace; and stdout closed by its reader.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { countFlag } from "../../src/cli/flags.ts";
import { UsageError } from "../../src/core/errors.ts";
import { mesh, tempDir } from "../helpers/cli.ts";

const MAIN = join(import.meta.dir, "..", "..", "src", "main.ts");
const tmp = tempDir("mesh-command-line-");
afterAll(() => tmp.cleanup());
const token = join(tmp.path, "token");
writeFileSync(token, "not-the-token\n");
/** Nothing listens at port 1: every case here must fail before a call. */
const NO_CP = ["--admin-url", "http://127.0.0.1:1", "--admin-token-file", token];

describe("global flags", () => {
  test("before the command, as after it", async () => {
    const before = await mesh("--log-level", "warn", "version");
    expect(before.code).toBe(0);
    expect(before.out).toBe((await mesh("version")).out);
  });
  test("before a subcommand's command, and -h before the command shows that command's help", async () => {
    const r = await mesh("ca", "--log-level=warn", "inspect", join(tmp.path, "nope.pem"));
    expect(r.err).toContain("nope.pem: certificate file not found");
    const help = await mesh("-h", "validate");
    expect(help.code).toBe(0);
    expect(help.out).toStartWith("Usage: mesh validate");
  });
  test("without its value, it is named", async () => {
    const r = await mesh("--log-level");
    expect(r.code).toBe(64);
    expect(r.err.split("\n")[0]).toBe("error: mesh: --log-level needs a value (LEVEL)");
  });
});

describe("after --", () => {
  test("a command that takes no arguments refuses what follows --, and does nothing", async () => {
    const out = join(tmp.path, "ca");
    const r = await mesh("ca", "init", "--out", out, "--", "--trust-domain", "other.org");
    expect(r.code).toBe(64);
    expect(r.err.split("\n")[0]).toBe('error: mesh ca init: unexpected "--trust-domain other.org" after --: this command takes no arguments (flags go before --)');
    expect(existsSync(out)).toBe(false);
  });
  test("-- ends the flags of a command that takes files", async () => {
    const f = join(tmp.path, "-bad.yaml");
    writeFileSync(f, "kind: [\n");
    const r = await mesh("validate", "--", f);
    expect(r.code).toBe(1);
    expect(r.err).toContain(f);
  });
});

describe("values", () => {
  test("mesh wait-ready --admin with port 0 is refused at once", async () => {
    const r = await mesh("wait-ready", "--admin", "127.0.0.1:0", "--timeout", "5s");
    expect(r.code).toBe(64);
    expect(r.err.split("\n")[0]).toBe('error: --admin: expected the sidecar\'s port, 1-65535 (port 0 cannot be dialled), got "127.0.0.1:0"');
  });
  test("a count past 2^53-1 is refused naming the flag; 2^53-1 is taken", () => {
    expect(countFlag(String(Number.MAX_SAFE_INTEGER), "--max-connections", "connections")).toBe(Number.MAX_SAFE_INTEGER);
    expect(() => countFlag("9007199254740992", "--max-connections", "connections")).toThrow('--max-connections: expected at most 9007199254740991 connections, got "9007199254740992"');
    expect(() => countFlag("1" + "0".repeat(400), "--max-connections", "connections")).toThrow(UsageError);
    expect(() => countFlag("1" + "0".repeat(400), "--max-connections", "connections")).toThrow("got a number of 401 digits");
  });
});

describe("the admin client", () => {
  test.each([["notaurl"], ["http://127.0.0.1:70000"], ["http://127.0.0.1:0"], ["ftp://127.0.0.1:15011"], ["http://127.0.0.1:15011/?x=1"]])("--admin-url %s is refused naming the flag", async (url) => {
    const r = await mesh("get", "service", "--admin-url", url, "--admin-token-file", token);
    expect(r.code).toBe(64);
    expect(r.err.split("\n")[0]).toStartWith(`error: --admin-url: expected `);
    expect(r.err.split("\n")[0]).toContain(`got "${url}"`);
  });
  test("--admin-token-file that is a directory is refused naming the flag and the directory", async () => {
    const d = join(tmp.path, "token-dir");
    mkdirSync(d);
    const r = await mesh("get", "service", "--admin-url", "http://127.0.0.1:1", "--admin-token-file", d);
    expect(r.code).toBe(64);
    expect(r.err.split("\n")[0]).toBe(`error: --admin-token-file: "${d}" is a directory; expected the admin token file, <data-dir>/admin-token`);
  });
  test("an empty --admin-token-file is refused before any call, naming it", async () => {
    const f = join(tmp.path, "empty-token");
    writeFileSync(f, "\n");
    const r = await mesh("get", "service", "--admin-url", "http://127.0.0.1:1", "--admin-token-file", f);
    expect(r.code).toBe(65);
    expect(r.err).toBe(`error: --admin-token-file: "${f}" is empty; expected the admin token 'mesh control-plane' wrote to <data-dir>/admin-token`);
  });
  test.each([[["get", "service"]], [["get", "service", "web"]], [["delete", "service", "web"]]])("mesh %p -n Bad_NS is refused naming --namespace", async (argv) => {
    const r = await mesh(...argv, "-n", "Bad_NS", ...NO_CP);
    expect(r.code).toBe(64);
    expect(r.err.split("\n")[0]).toStartWith('error: --namespace: namespace "Bad_NS" must be a DNS label');
  });
});

test("stdout closed by its reader ends the command quietly, with its own status", () => {
  // The reader is gone before mesh starts, so its write meets EPIPE every time.
  const p = Bun.spawnSync(["bash", "-c", `{ sleep 0.2; "$0" "$1" version; } | true; echo "status \${PIPESTATUS[0]}" >&2`, process.execPath, MAIN], { stdout: "ignore", stderr: "pipe" });
  expect(p.stderr.toString()).toBe("status 0\n");
});
