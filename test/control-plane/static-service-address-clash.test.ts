/**
 * Review (an attacker's and a careful operator's) of a sidecar's static Service (its
 * --config file) claiming an address that the control plane's Service has: the warning
 * names both, the control plane's Service keeps the address, and when it lets go the
 * static one has it and nothing more is logged.
 * Real `mesh control-plane` and `mesh proxy` processes; every one stopped in afterAll.
 * (Moved from test/control-plane/review-serving-renewal.test.ts, whose other reviews are
 * about the control plane's own certificate.)
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../helpers/cli.ts";
import { cpSidecar, eventually, serviceManifest, startControlPlane } from "../helpers/control-plane.ts";
import { Echoes } from "../helpers/mesh-fixture.ts";
import { stopAll } from "../helpers/procs.ts";
import { records, warnOrWorse } from "../helpers/log-records.ts";

const tmp = tempDir("mesh-static-clash-");

const services = new Echoes();

afterAll(async () => {
  await stopAll();
  services.stop();
  tmp.cleanup();
});

// ---------------------------------------------------------------------------------------
// Small tools

async function configDump(adminPort: number): Promise<Record<string, unknown> & { version?: string; certificateExpires: string; listeners: Record<string, unknown> }> {
  return (await (await fetch(`http://127.0.0.1:${adminPort}/config_dump`)).json()) as never;
}

// ---------------------------------------------------------------------------------------
// A static Service whose address the control plane's Service claims

describe("a sidecar's static Service claiming an address the control plane's Service has", () => {
  test("the warning names both, calls to the address go to the control plane's Service; when it lets go, the static one has it and nothing is logged", async () => {
    const dir = join(tmp.path, "static-clash");
    const cp = await startControlPlane(dir);
    const payments = (addresses?: string[]) => {
      const m = serviceManifest("payments") as { spec: Record<string, unknown> };
      if (addresses) m.spec.addresses = addresses;
      return m as Record<string, unknown>;
    };
    await cp.apply(serviceManifest("orders"), payments(["10.77.0.9", "fd00:0:0::9"]));
    const paymentsEcho = services.echo("payments-clash");
    await cpSidecar(cp, dir, "payments", "1", paymentsEcho.url);
    const legacyEcho = services.echo("legacy-outside");
    const port = Number(new URL(legacyEcho.url).port);
    const staticFile = join(dir, "static.yaml");
    writeFileSync(
      staticFile,
      `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: legacy\nspec:\n  mtls: false\n  ports:\n    - name: http\n      port: 80\n      targetPort: ${port}\n  addresses: ["10.77.0.9", "10.77.0.10", "fd00::9"]\n  endpoints:\n    - address: 127.0.0.1\n      port: ${port}\n`,
    );
    const orders = await cpSidecar(cp, dir, "orders", "1", services.echo("orders-clash").url, ["--config", staticFile]);
    const clashes = () => records(orders).filter((r) => r.level === 40 && r.msg.startsWith("static Service default/legacy"));
    expect(await eventually(() => clashes().length >= 2, 10_000)).toBe(true);
    const messages = [...new Set(clashes().map((r) => r.msg))].sort();
    expect(messages).toEqual([
      "static Service default/legacy: 10.77.0.9 is the control plane's Service default/payments's, which keeps it",
      "static Service default/legacy: fd00::9 is the control plane's Service default/payments's, which keeps it",
    ]);
    expect(clashes().every((r) => typeof r.version === "string")).toBe(true);
    const who = async (host: string) => {
      const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/`, { headers: { host } });
      return res.status === 200 ? ((await res.json()) as { service: string }).service : `${res.status}`;
    };
    expect(await eventually(async () => (await who("10.77.0.9")) === "payments-clash", 10_000)).toBe(true);
    expect(await who("[fd00::9]")).toBe("payments-clash");
    expect(await who("10.77.0.10")).toBe("legacy-outside");
    expect(await who("legacy")).toBe("legacy-outside");

    // The control plane's Service lets the addresses go: the static Service has them, and the new version logs nothing.
    await cp.apply(serviceManifest("orders"), payments());
    expect(await eventually(async () => (await who("10.77.0.9")) === "legacy-outside", 10_000)).toBe(true);
    expect(await who("[fd00::9]")).toBe("legacy-outside");
    const latest = (await configDump(orders.ports.admin)).version as string | undefined;
    expect(clashes().filter((r) => latest !== undefined && r.version === latest)).toEqual([]);
    expect(warnOrWorse(orders).filter((r) => !r.msg.startsWith("static Service default/legacy"))).toEqual([]);
  }, 60_000);
});
