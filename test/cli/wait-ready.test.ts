/** `mesh wait-ready`: polls a real sidecar's /ready until 200, or fails naming the last answer. */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { startMesh } from "../helpers/procs.ts";
import { freePort } from "../helpers/ports.ts";

const fx = fixtureFor("orders");

const sidecarArgs = (admin: number, ...extra: string[]) => [
  "proxy", "--service", "orders", "--upstream", fx.echo("orders").url, "--certs-dir", join(fx.tmp.path, "certs", "orders"),
  "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", `127.0.0.1:${admin}`, ...extra,
];

test("waits for a sidecar that starts after it, then exits 0", async () => {
  const admin = freePort();
  const waiting = mesh("wait-ready", "--admin", `127.0.0.1:${admin}`, "--timeout", "20s");
  await Bun.sleep(500);
  const sidecar = await startMesh(sidecarArgs(admin));
  expect(await waiting).toEqual({ code: 0, out: `ready: http://127.0.0.1:${admin}/ready`, err: "" });
  sidecar.proc.kill("SIGTERM");
  expect(await sidecar.proc.exited).toBe(0);
});

test("a sidecar whose control plane is unreachable is not ready: exit 1 after the timeout, with its answer", async () => {
  const admin = freePort();
  const nowhere = freePort();
  // Its certificate is at hand (issued by the CA), so it starts; the control plane never answers.
  const sidecar = await startMesh(sidecarArgs(admin, "--control-plane", `https://127.0.0.1:${nowhere}`));
  const r = await mesh("wait-ready", "--admin", `127.0.0.1:${admin}`, "--timeout", "1s");
  expect(r.code).toBe(1);
  expect(r.err).toBe(`error: mesh wait-ready: http://127.0.0.1:${admin}/ready not ready after 1000 ms (last: 503 not ready: waiting for the first config from the control plane)`);
  sidecar.proc.kill("SIGTERM");
  expect(await sidecar.proc.exited).toBe(0);
});

test("bad flags are usage errors naming the flag", async () => {
  expect((await mesh("wait-ready", "--admin", "nope")).err).toContain("--admin: expected ADDRESS:PORT");
  expect((await mesh("wait-ready", "--timeout", "soon")).err).toContain("--timeout: expected a duration");
});
