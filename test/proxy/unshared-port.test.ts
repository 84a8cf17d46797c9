/**
 * A listener that rotates by SO_REUSEPORT claims its address against other mesh processes
 * before it probes and binds (src/proxy/transport/unshared-port.ts): two started at the same
 * instant on one port can no longer both pass the probe and share the port.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { claimUnsharedPort } from "../../src/proxy/transport/unshared-port.ts";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { freePorts } from "../helpers/ports.ts";
import { startMesh } from "../helpers/procs.ts";

const fx = fixtureFor("payments");

test("a sidecar whose inbound address another mesh process has claimed, not yet bound (its probe passed), is refused at start: the port is in use", async () => {
  const [port] = freePorts(1);
  // This process stands for the other sidecar, between its probe and its bind: the port itself is free.
  const other = claimUnsharedPort("127.0.0.1", port!);
  try {
    const start = startMesh(["proxy", "--service", "payments", "--upstream", "http://127.0.0.1:9", "--certs-dir", join(fx.tmp.path, "certs", "payments"),
      "--inbound", `127.0.0.1:${port}`, "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"], { timeoutMs: 8000 });
    const outcome = await start.then((p) => (p.proc.kill("SIGKILL"), "started"), (err: Error) => err.message);
    expect(outcome).toContain(`cannot listen on 127.0.0.1:${port}: the port is in use`);
  } finally {
    other.release();
  }
});

test("released when its listener stops for good, and with the process that held it, however it ended", async () => {
  const [port] = freePorts(1);
  const first = claimUnsharedPort("127.0.0.1", port!);
  expect(() => claimUnsharedPort("127.0.0.1", port!)).toThrow();
  first.release();
  claimUnsharedPort("127.0.0.1", port!).release();

  // A process killed while it holds a claim leaves nothing behind.
  const holder = Bun.spawn([process.execPath, "-e", `require(${JSON.stringify(join(import.meta.dir, "../../src/proxy/transport/unshared-port.ts"))}).claimUnsharedPort("127.0.0.1", ${port}); console.log("held"); setInterval(() => {}, 1000)`], { stdout: "pipe" });
  try {
    const reader = holder.stdout.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toContain("held");
    expect(() => claimUnsharedPort("127.0.0.1", port!)).toThrow();
  } finally {
    holder.kill("SIGKILL");
    await holder.exited;
  }
  claimUnsharedPort("127.0.0.1", port!).release();
});

test("port 0: the ephemeral port the kernel picks is the one claimed", () => {
  const claim = claimUnsharedPort("127.0.0.1", 0);
  try {
    expect(claim.port).toBeGreaterThan(0);
    expect(() => claimUnsharedPort("127.0.0.1", claim.port)).toThrow();
  } finally {
    claim.release();
  }
});

test("a connection to a claim's name is closed at once: a claim holds no descriptor for another process", async () => {
  const claim = claimUnsharedPort("127.0.0.1", 0);
  try {
    const closed: boolean[] = [];
    for (let i = 0; i < 5; i++) {
      closed.push(
        await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 1000);
          void Bun.connect({ unix: `\0mesh-listener/127.0.0.1/${claim.port}`, socket: { data() {}, close: () => (clearTimeout(timer), resolve(true)), error: () => (clearTimeout(timer), resolve(true)) } }).catch(() => (clearTimeout(timer), resolve(true)));
        }),
      );
    }
    expect(closed.every(Boolean)).toBe(true);
  } finally {
    claim.release();
  }
});
