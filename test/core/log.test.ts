import { expect, test } from "bun:test";
import { renderPretty } from "../../src/core/log.ts";

test("pretty rendering keeps message, level and fields readable", () => {
  const line = JSON.stringify({ level: 40, time: Date.UTC(2026, 0, 1, 12, 0, 1, 123), role: "proxy", msg: "upstream slow", endpoint: "10.0.0.1:80", ms: 250 });
  expect(renderPretty(line, false)).toBe("12:00:01.123 WARN  proxy upstream slow endpoint=10.0.0.1:80 ms=250\n");
  expect(renderPretty(line, true)).toContain("\x1b[33mWARN \x1b[0m");
});

test("a line that is not JSON passes through untouched", () => {
  expect(renderPretty("plain text", false)).toBe("plain text");
});

test("a logger in a child process writes JSON lines on stderr, filtered by level", () => {
  const script = `import { createLogger } from "${import.meta.dir}/../../src/core/log.ts";
const log = createLogger({ level: "warn", role: "t" }); log.info("hidden"); log.warn({ k: 1 }, "shown");`;
  const p = Bun.spawnSync([process.execPath, "-e", script], { stderr: "pipe" });
  const lines = p.stderr.toString().trim().split("\n");
  expect(lines.length).toBe(1);
  expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40, role: "t", msg: "shown", k: 1 });
});
