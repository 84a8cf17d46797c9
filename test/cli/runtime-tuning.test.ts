import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { OPT_OUT, runtimeTuningRemoved, SIDECAR_RUNTIME, TUNED_MARKER, tunedReexec } from "../../src/cli/runtime-tuning.ts";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { startReady } from "../helpers/procs.ts";

const NAMES = Object.keys(SIDECAR_RUNTIME);

describe("tunedReexec", () => {
  test("a compiled binary restarts with its own arguments, not its embedded entry point", () => {
    const plan = tunedReexec("/usr/bin/mesh", ["bun", "/$bunfs/root/mesh", "proxy", "--service", "a"], [], { PATH: "/bin" })!;
    expect(plan.file).toBe("/usr/bin/mesh");
    expect(plan.args).toEqual(["/usr/bin/mesh", "proxy", "--service", "a"]);
    expect(plan.env).toEqual({ PATH: "/bin", ...SIDECAR_RUNTIME, [TUNED_MARKER]: NAMES.join(",") });
  });

  test("from source, the runtime's flags and the script come along", () => {
    const plan = tunedReexec("/x/bun", ["/x/bun", "/repo/src/main.ts", "proxy"], ["--smol"], {})!;
    expect(plan.args).toEqual(["/x/bun", "--smol", "/repo/src/main.ts", "proxy"]);
  });

  test("a setting the user made is kept, and not listed as added", () => {
    const plan = tunedReexec("/m", ["bun", "/$bunfs/root/m", "proxy"], [], { BUN_JSC_numberOfGCMarkers: "4" })!;
    expect(plan.env.BUN_JSC_numberOfGCMarkers).toBe("4");
    expect(plan.env[TUNED_MARKER]!.split(",")).not.toContain("BUN_JSC_numberOfGCMarkers");
  });

  test("never twice, and not when opted out", () => {
    expect(tunedReexec("/m", ["bun", "/$bunfs/root/m", "proxy"], [], { [TUNED_MARKER]: "" })).toBeUndefined();
    expect(tunedReexec("/m", ["bun", "/$bunfs/root/m", "proxy"], [], { [OPT_OUT]: "off" })).toBeUndefined();
  });
});

describe("runtimeTuningRemoved", () => {
  test("gives back the environment the user gave mesh", () => {
    const user = { PATH: "/bin", BUN_JSC_numberOfGCMarkers: "4" };
    const tuned = tunedReexec("/m", ["bun", "/$bunfs/root/m", "run"], [], user)!.env;
    expect(runtimeTuningRemoved(tuned)).toEqual(user);
    expect(runtimeTuningRemoved(user)).toEqual(user);
  });
});

describe("a sidecar process", () => {
  const fx = fixtureFor("orders");

  const environ = (pid: number) => readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
  const start = (env: Record<string, string | undefined>) =>
    startReady(
      [process.execPath, join(import.meta.dir, "../../src/main.ts"), "proxy", "--service", "orders", "--upstream", "http://127.0.0.1:1",
        "--certs-dir", join(fx.tmp.path, "certs", "orders"), "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
      { env },
    );

  test("runs with the engine settings, in the process that was started", async () => {
    const p = await start({ ...process.env, [TUNED_MARKER]: undefined, [OPT_OUT]: undefined });
    const env = environ(p.proc.pid);
    for (const [name, value] of Object.entries(SIDECAR_RUNTIME)) expect(env).toContain(`${name}=${value}`);
    expect(p.proc.exitCode).toBeNull();
    p.proc.kill("SIGTERM");
    expect(await p.proc.exited).toBe(0);
  });

  test("MESH_RUNTIME_TUNING=off leaves the environment as given", async () => {
    const p = await start({ ...process.env, [TUNED_MARKER]: undefined, [OPT_OUT]: "off" });
    const env = environ(p.proc.pid);
    for (const name of NAMES) expect(env.some((e) => e.startsWith(`${name}=`))).toBe(false);
    p.proc.kill("SIGTERM");
    expect(await p.proc.exited).toBe(0);
  });
});
