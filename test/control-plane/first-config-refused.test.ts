/**
 * A proxy that refuses its first config (a proxy older than the control plane, meeting a
 * field it does not know) never registers, since it has no policy to serve with; the
 * operator must still see why (threats.md: "the rejection is visible to the operator").
 * Against a real control plane: the refusal is kept under the service with a short
 * lease, `mesh check` fails naming it, only the service's own identity may report it,
 * and it is gone once an instance applies a config and registers.
 *
 * The agent runs in this process with a target that refuses as such a proxy would: the
 * control plane validates with the same schemas as this build's proxy, so no config it
 * sends can be refused by a real proxy of the same build.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createLogger } from "../../src/core/log.ts";
import { loadWorkloadCerts, type WorkloadCerts } from "../../src/proxy/certs.ts";
import { ControlPlaneAgent, type AgentTarget } from "../../src/proxy/control/agent.ts";
import { ConfigRejected } from "../../src/proxy/control/config-documents.ts";
import { ControlPlaneClient } from "../../src/proxy/control/cp-client.ts";
import { mesh, tempDir } from "../helpers/cli.ts";
import { eventually, serviceManifest, startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { stopAll } from "../helpers/procs.ts";

const tmp = tempDir("mesh-first-refusal-");
let cp: TestControlPlane;
let admin: string[];
const agents: ControlPlaneAgent[] = [];

async function issue(service: string): Promise<{ dir: string; certs: WorkloadCerts }> {
  const dir = join(tmp.path, "certs", service);
  const r = await mesh("ca", "issue", "--service", service, "--ca-dir", cp.caDir, "--out", dir, "--force");
  if (r.code !== 0) throw new Error(r.err);
  return { dir, certs: await loadWorkloadCerts({ certsDir: dir }) };
}

/** Refuses every config until told otherwise, as a proxy that does not know a field would. */
class OlderProxy implements AgentTarget {
  knowsTheField = false;
  applied: string[] = [];
  applyConfig(_documents: unknown[], version: string): void {
    if (!this.knowsTheField) throw new ConfigRejected("document 1 spec.retryPolicy: unknown field");
    this.applied.push(version);
  }
  useCerts(): void {}
  async healthy(): Promise<boolean> {
    return true;
  }
}

function agentFor(service: string, certsDir: string, certs: WorkloadCerts, target: AgentTarget, port: number): ControlPlaneAgent {
  const agent = new ControlPlaneAgent({
    client: new ControlPlaneClient([`https://127.0.0.1:${cp.ports.api}`], certs),
    registration: { namespace: "default", service, address: "127.0.0.1", port, weight: 1 },
    certs,
    certsDir,
    target,
    log: createLogger({ level: "silent" }),
  });
  agents.push(agent);
  agent.start();
  return agent;
}

beforeAll(async () => {
  cp = await startControlPlane(tmp.path);
  await cp.apply(serviceManifest("payments"), serviceManifest("orders"));
  const tokenFile = join(tmp.path, "admin.token");
  writeFileSync(tokenFile, cp.adminToken);
  admin = ["--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", tokenFile];
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop()));
  await stopAll();
  tmp.cleanup();
});

test("a refused first config is shown by mesh check, and cleared once an instance applies one and registers", async () => {
  const { dir, certs } = await issue("payments");
  const older = new OlderProxy();
  const agent = agentFor("payments", dir, certs, older, 41_001);
  await agent.firstConfig;

  let out = "";
  const shown = await eventually(async () => (out = (await mesh("check", ...admin)).out).includes("refused its first config"), 5000, 100);
  if (!shown) console.error(out);
  expect(shown).toBe(true);
  expect(out).toMatch(/FAIL {2}proxy default\/payments at 127\.0\.0\.1:41001 refused its first config [0-9a-f]+: document 1 spec\.retryPolicy: unknown field; it is not registered and serves no traffic/);
  expect(out).toContain("fix: correct the manifest it names with 'mesh apply', or upgrade that proxy");
  // Not registered: nothing routes to it, and it is not counted as connected.
  expect(out).toContain("FAIL  no proxies connected");
  const endpoints = await cp.admin("GET", "/v1/endpoints");
  expect(endpoints.status).toBe(200);
  expect(((await endpoints.json()) as { items: unknown[] }).items).toEqual([]);

  // The field is understood now (the proxy was upgraded): the next version is applied, the proxy registers, the refusal is gone.
  older.knowsTheField = true;
  await cp.apply({ ...serviceManifest("payments"), spec: { ...(serviceManifest("payments").spec as object), identity: "payments" } });
  // Its own registration then adds its endpoint to its Service: a second version may follow at once.
  expect(await eventually(() => older.applied.length >= 1, 10_000, 100)).toBe(true);
  const cleared = await eventually(async () => !(out = (await mesh("check", ...admin)).out).includes("refused"), 10_000, 200);
  if (!cleared) console.error(out);
  expect(cleared).toBe(true);
  expect(out).toContain("PASS  1 proxies connected");
  await agent.stop();
}, 60_000);

test("only the service's own identity may report a refusal for it, and each service keeps one record", async () => {
  const orders = await issue("orders");
  const post = (certsDir: string, port: number) =>
    fetch(`https://127.0.0.1:${cp.ports.api}/v1/config/ack`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ registration: { namespace: "default", service: "payments", address: "127.0.0.1", port, weight: 1 }, version: "0123456789abcdef", error: "forged" }),
      tls: { cert: Bun.file(join(certsDir, "chain.pem")), key: Bun.file(join(certsDir, "key.pem")), ca: Bun.file(cp.bundle), checkServerIdentity: () => undefined },
    });
  const forged = await post(orders.dir, 41_002);
  expect(forged.status).toBe(403);
  expect(await forged.text()).toContain("may not act for service default/payments");

  const payments = await issue("payments");
  for (const port of [41_010, 41_011, 41_012]) expect((await post(payments.dir, port)).status).toBe(200);
  const list = (await (await cp.admin("GET", "/v1/proxies")).json()) as { items: { service: string; registered?: boolean; endpoint: string }[] };
  const waiting = list.items.filter((p) => p.service === "payments" && p.registered === false);
  expect(waiting.map((p) => p.endpoint)).toEqual(["127.0.0.1:41012"]);
});
