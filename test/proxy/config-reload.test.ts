/**
 * A sidecar without a control plane follows edits to its --config file (real sidecars):
 * a Service's new endpoints and an added AuthorizationPolicy take effect; an edit that
 * fails validation is logged with the file and field named while the last good config
 * serves on; a changed ProxyConfig waits for the next start, and the log says so.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { MeshFixture } from "../helpers/mesh-fixture.ts";
import { eventually } from "../helpers/wait.ts";

const fx = new MeshFixture();
let ordersFile: string;
let paymentsFile: string;
let orders: Awaited<ReturnType<typeof fx.proxy>>;
let paymentsA: Awaited<ReturnType<typeof fx.proxy>>;
let paymentsB: Awaited<ReturnType<typeof fx.proxy>>;

const service = (port: number) => `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: payments\nspec:\n  ports:\n    - {name: http, port: 80}\n  endpoints:\n    - {address: 127.0.0.1, port: ${port}}\n`;
const denyOrders = `---\napiVersion: mesh.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: no-orders\nspec:\n  service: payments\n  action: deny\n  rules:\n    - from: {services: [orders]}\n`;

/** Which payments answers a call from orders, or the status it got. */
async function whoAnswers(): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/who`, { headers: { host: "payments" } });
  return res.status === 200 ? ((await res.json()) as { service: string }).service : String(res.status);
}

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  paymentsFile = join(fx.tmp.path, "payments.yaml");
  writeFileSync(paymentsFile, service(1));
  paymentsA = await fx.proxy("payments", fx.echo("payments-a").url, paymentsFile);
  paymentsB = await fx.proxy("payments", fx.echo("payments-b").url);
  ordersFile = join(fx.tmp.path, "orders.yaml");
  writeFileSync(ordersFile, service(paymentsA.ports.inbound));
  orders = await fx.proxy("orders", fx.echo("orders").url, ordersFile);
});
afterAll(() => fx.close());

describe("edits to --config", () => {
  test("a Service's new endpoint is taken: calls go to it", async () => {
    expect(await whoAnswers()).toBe("payments-a");
    writeFileSync(ordersFile, service(paymentsB.ports.inbound));
    expect(await eventually(async () => (await whoAnswers()) === "payments-b", 10_000)).toBe(true);
    expect(orders.stderr()).toContain("config reloaded");
  }, 20_000);

  test("an edit that fails validation is refused, naming the file and field; the last good config serves on", async () => {
    writeFileSync(ordersFile, service(paymentsB.ports.inbound).replace("port: 80}", "port: 80, protocl: http}"));
    const refused = await eventually(() => orders.stderr().includes("config file not taken") && orders.stderr().includes(`${ordersFile}#0 spec.ports[0]`) && orders.stderr().includes("protocl"), 10_000);
    expect(refused).toBe(true);
    expect(await whoAnswers()).toBe("payments-b");
    writeFileSync(ordersFile, "kind: [unclosed\n");
    expect(await eventually(() => (orders.stderr().match(/config file not taken/g) ?? []).length >= 2, 10_000)).toBe(true);
    expect(await whoAnswers()).toBe("payments-b");
    writeFileSync(ordersFile, service(paymentsA.ports.inbound));
    expect(await eventually(async () => (await whoAnswers()) === "payments-a", 10_000)).toBe(true);
  }, 20_000);

  test("an AuthorizationPolicy added to the callee's file is enforced on its inbound, and removed again", async () => {
    writeFileSync(paymentsFile, service(1) + denyOrders);
    expect(await eventually(async () => (await whoAnswers()) === "403", 10_000)).toBe(true);
    writeFileSync(paymentsFile, service(1));
    expect(await eventually(async () => (await whoAnswers()) === "payments-a", 10_000)).toBe(true);
  }, 20_000);

  test("a changed ProxyConfig waits for the next start, and the log names its fields", async () => {
    const proxyConfig = (max: number) => `---\napiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: billing}\nspec:\n  upstream: http://127.0.0.1:1\n  maxConnections: ${max}\n`;
    const billingFile = join(fx.tmp.path, "billing.yaml");
    writeFileSync(billingFile, service(paymentsA.ports.inbound) + proxyConfig(100));
    await fx.issue("billing");
    const billing = await fx.proxy("billing", fx.echo("billing").url, billingFile);
    writeFileSync(billingFile, service(paymentsB.ports.inbound) + proxyConfig(77));
    expect(await eventually(() => billing.stderr().includes('"atNextStart":["ProxyConfig spec.maxConnections"]'), 10_000)).toBe(true);
    // The rest of the file is taken.
    const res = await fetch(`http://127.0.0.1:${billing.ports.outbound}/who`, { headers: { host: "payments" } });
    expect(((await res.json()) as { service: string }).service).toBe("payments-b");
  }, 20_000);
});
