/**
 * A guard on the request path's allocations: no function on it may hold a closure, even
 * on a rare path, since the engine then allocates a scope object (JSLexicalEnvironment)
 * on every call, closure made or not. Three had crept back in (the outbound's handler,
 * the inbound's, and its authentication). Runs `npm run bench:alloc -- --pair` for real
 * (the pair from source, collections held off) and reads its census; counts are per
 * request and exact, so this asserts no timing. The harness stops what it starts, by pid.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";

test("the sidecar pair allocates no scope object per request, on either side", async () => {
  const run = Bun.spawn([process.execPath, join(import.meta.dir, "run.ts"), "--pair", "--requests", "300", "--warmup", "1500"], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(run.stdout).text(), new Response(run.stderr).text()]);
  await run.exited;
  const sides = out.split(/\n(?=outbound:|inbound:)/).filter((s) => /^(outbound|inbound):/.test(s));
  expect([sides.length, err.includes("did not") ? err : ""]).toEqual([2, ""]);
  for (const side of sides) {
    const scopes = /([\d.]+)\s+JSLexicalEnvironment/.exec(side);
    // Types under 0.05 a request are left out of the census.
    expect([side.slice(0, side.indexOf(":")), scopes === null ? 0 : Number(scopes[1])]).toEqual([side.slice(0, side.indexOf(":")), 0]);
  }
  expect(out).toMatch(/all \d+ processes this run started have exited/);
}, 60_000);
