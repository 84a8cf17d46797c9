/**
 * The sidecar pair end to end, as real processes on loopback: caller identity proven by
 * mTLS and handed to the service; strict refusal of anyone else; pooled connections.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { issueLeaf, loadCa } from "../../src/ca/authority.ts";
import { certToPem, exportPrivateKeyPem, generateKeyPair } from "../../src/pki/x509.ts";
import { MeshFixture, metricValue, type EchoService } from "../helpers/mesh-fixture.ts";
import { rawExchange } from "../helpers/raw-http.ts";

const fx = new MeshFixture();
let payments: EchoService;
let ordersProxy: Awaited<ReturnType<MeshFixture["proxy"]>>;
let paymentsProxy: Awaited<ReturnType<MeshFixture["proxy"]>>;
const otherCa = join(fx.tmp.path, "other-ca");

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  payments = fx.echo("payments");
  const orders = fx.echo("orders");
  // The header names the service receives, for /names; the echo for the rest.
  const service = fx.service(async (req) => (new URL(req.url).pathname === "/names" ? Response.json([...req.headers.keys()]) : fetch(new Request(payments.url + new URL(req.url).pathname, req))));
  paymentsProxy = await fx.proxy("payments", service.url);
  ordersProxy = await fx.proxy("orders", orders.url, fx.config("orders", { payments: [paymentsProxy.ports.inbound] }));
});
afterAll(() => fx.close());

describe("caller identity", () => {
  test("a call through the pair reaches the service with the caller's SPIFFE ID (curl as HTTP_PROXY)", async () => {
    // Async spawn: the echo services live in this process and must keep answering.
    const curl = Bun.spawn(["curl", "-sS", "--max-time", "10", "-x", `http://127.0.0.1:${ordersProxy.ports.outbound}`, "http://payments/charge?x=1"], {
      env: { ...process.env, NO_PROXY: "" },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, err] = await Promise.all([new Response(curl.stdout).text(), new Response(curl.stderr).text()]);
    expect(err).toBe("");
    expect(JSON.parse(out)).toEqual({
      service: "payments",
      caller: "spiffe://mesh.local/ns/default/sa/orders",
      path: "/charge",
      method: "GET",
      body: "",
    });
  });

  test("by Host header, with a body; a client-supplied identity header is replaced", async () => {
    const res = await fetch(`http://127.0.0.1:${ordersProxy.ports.outbound}/pay`, {
      method: "POST",
      headers: { host: "payments", "x-mesh-client-id": "spiffe://mesh.local/ns/default/sa/admin", connection: "x-mesh-client-id" },
      body: "amount=5",
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ caller: "spiffe://mesh.local/ns/default/sa/orders", method: "POST", body: "amount=5", path: "/pay" });
  });

  test("a copy of an identity header named with '_' for '-' is removed too: CGI-style servers read it as the real one", async () => {
    const forged = "spiffe://mesh.local/ns/default/sa/admin";
    const lines = ["x_mesh_client_id", "X_Mesh_Client-Id", "l5d_client_id", "x_forwarded_client_cert"].map((n) => `${n}: ${forged}`);
    for (const extra of [[], ["Content-Length: 2"]]) {
      // Without a body the head is relayed as received when it can be; with one it is rebuilt: both must drop them.
      const r = await rawExchange(`${extra.length ? "POST" : "GET"} /names HTTP/1.1\r\nHost: payments\r\n${[...lines, ...extra].join("\r\n")}\r\nConnection: close\r\n\r\n${extra.length ? "ok" : ""}`, { port: ordersProxy.ports.outbound });
      expect(r.statuses).toEqual([200]);
      const names = JSON.parse(r.text.split("\r\n\r\n")[1]!) as string[];
      expect(names.filter((n) => /client|forwarded/.test(n))).toEqual(["x-mesh-client-id"]);
    }
  });

  test("an unknown service gets 404 naming it", async () => {
    const res = await fetch(`http://127.0.0.1:${ordersProxy.ports.outbound}/`, { headers: { host: "nowhere" } });
    expect(res.status).toBe(404);
    expect(res.headers.get("x-mesh-error")).toBe("no-route");
    expect(await res.text()).toContain('"nowhere"');
  });

  test("connections between the pair are pooled: no TLS handshake per request", async () => {
    const before = await metricValue(paymentsProxy.ports.admin, "mesh_connections_total", { direction: "inbound" });
    for (let i = 0; i < 50; i++) {
      const res = await fetch(`http://127.0.0.1:${ordersProxy.ports.outbound}/n`, { headers: { host: "payments" } });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    const after = await metricValue(paymentsProxy.ports.admin, "mesh_connections_total", { direction: "inbound" });
    expect(after - before).toBeLessThanOrEqual(1);
  });
});

describe("strict mTLS on the inbound listener", () => {
  let intruder: { cert: string; key: string };
  let expired: { cert: string; key: string };
  let otherDomain: { cert: string; key: string };

  beforeAll(async () => {
    const { mesh } = await import("../helpers/cli.ts");
    await mesh("ca", "init", "--out", otherCa);
    const dir = await fx.issue("intruder", otherCa);
    intruder = { cert: readFileSync(join(dir, "chain.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8") };
    const ca = await loadCa(fx.ca);
    const keys = await generateKeyPair();
    const old = await issueLeaf(ca.intermediate, { trustDomain: "mesh.local", namespace: "default", service: "orders", dnsNames: [], ttlMs: 3600_000, publicKey: keys.publicKey }, new Date(Date.now() - 3 * 3600_000));
    expired = { cert: certToPem(old.cert) + certToPem(ca.intermediate.cert), key: await exportPrivateKeyPem(keys.privateKey) };
    const tdCa = join(fx.tmp.path, "td-ca");
    await mesh("ca", "init", "--trust-domain", "evil.example", "--out", tdCa);
    const tdDir = await fx.issue("orders-evil", tdCa);
    otherDomain = { cert: readFileSync(join(tdDir, "chain.pem"), "utf8"), key: readFileSync(join(tdDir, "key.pem"), "utf8") };
  });

  async function attempt(client?: { cert: string; key: string }, ca?: string): Promise<string> {
    try {
      const res = await fetch(`https://127.0.0.1:${paymentsProxy.ports.inbound}/`, {
        tls: { ...(client ?? {}), ca: ca ?? readFileSync(join(fx.ca, "bundle.pem"), "utf8"), checkServerIdentity: () => undefined },
        keepalive: false,
      });
      await res.arrayBuffer();
      return `status ${res.status}`;
    } catch {
      return "refused";
    }
  }

  test("control: a client with a certificate from this mesh gets through", async () => {
    const dir = join(fx.tmp.path, "certs", "orders");
    const valid = { cert: readFileSync(join(dir, "chain.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8") };
    expect(await attempt(valid)).toBe("status 200");
  });

  for (const [name, pick] of [
    ["no client certificate", () => undefined],
    ["a certificate from another CA", () => intruder],
    ["an expired certificate", () => expired],
    ["a certificate from another trust domain", () => otherDomain],
  ] as const) {
    test(`${name}: refused 100 out of 100, nothing forwarded`, async () => {
      const hitsBefore = payments.hits;
      const results = await Promise.all(Array.from({ length: 100 }, () => attempt(pick())));
      expect(results.filter((r) => r !== "refused")).toEqual([]);
      expect(payments.hits).toBe(hitsBefore);
    });
  }

  test("refusals are counted by kind, and said in the log: once per kind within 10 s, not once per connection", async () => {
    const refused = (reason: string) => metricValue(paymentsProxy.ports.admin, "mesh_tls_failures_total", { direction: "inbound", reason });
    // A certificate of another CA (or of another trust domain's) is untrusted: 200 of them, each counted.
    expect({ none: await refused("no-certificate"), untrusted: await refused("untrusted"), expired: await refused("expired") }).toEqual({ none: 100, untrusted: 200, expired: 100 });
    const said = paymentsProxy.stderr().split("\n").filter((l) => l.includes("refused an inbound TLS peer"));
    expect(said.map((l) => (JSON.parse(l) as { kind: string }).kind).sort()).toEqual(["expired", "no-certificate", "untrusted"]);
    expect(said.every((l) => (JSON.parse(l) as { level: number }).level === 40)).toBe(true);
  });
});

describe("the destination's identity is verified, not its hostname", () => {
  test("a peer presenting another service's identity is refused with 502; each refusal counted, the endpoint said once in the log with why", async () => {
    await fx.issue("inventory");
    const inventory = fx.echo("inventory");
    const impostor = await fx.proxy("inventory", inventory.url);
    // The caller's config says "payments" lives where inventory's proxy is.
    const caller = await fx.proxy("orders", fx.echo("orders2").url, fx.config("misdirected", { payments: [impostor.ports.inbound] }));
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`http://127.0.0.1:${caller.ports.outbound}/`, { headers: { host: "payments" } });
      expect(res.status).toBe(502);
      expect(res.headers.get("x-mesh-error")).toBe("peer-identity");
    }
    expect(inventory.hits).toBe(0);
    // Every dial was refused (retries dial again), so at least one per request.
    expect(await metricValue(caller.ports.admin, "mesh_tls_failures_total", { direction: "outbound", reason: "peer-identity" })).toBeGreaterThanOrEqual(3);
    const said = caller.stderr().split("\n").filter((l) => l.includes("refused an upstream's certificate"));
    expect(said).toHaveLength(1);
    const line = JSON.parse(said[0]!) as { level: number; endpoint: string; reason: string };
    expect(line).toMatchObject({ level: 40, endpoint: `127.0.0.1:${impostor.ports.inbound}` });
    expect(line.reason).toContain("spiffe://mesh.local/ns/default/sa/inventory");
  });
});

describe("admin", () => {
  test("live, ready, metrics and config dump; no mutation by any method", async () => {
    const admin = `http://127.0.0.1:${ordersProxy.ports.admin}`;
    expect((await fetch(`${admin}/live`)).status).toBe(200);
    expect((await fetch(`${admin}/ready`)).status).toBe(200);
    const metrics = await (await fetch(`${admin}/metrics`)).text();
    expect(metrics).toMatch(/mesh_requests_total\{direction="outbound",peer="payments",status="2xx"\} \d+/);
    expect(metrics).toContain("mesh_request_duration_ms_bucket");
    const dump = (await (await fetch(`${admin}/config_dump`)).json()) as { identity: string; destinations: { name: string; identity: string }[] };
    expect(dump.identity).toBe("spiffe://mesh.local/ns/default/sa/orders");
    expect(dump.destinations[0]).toMatchObject({ name: "payments", identity: "spiffe://mesh.local/ns/default/sa/payments" });
    expect((await fetch(`${admin}/ready`, { method: "POST" })).status).toBe(405);
  });
});
