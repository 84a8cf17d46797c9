/**
 * A trust bundle that also holds another trust domain's roots (a federated partner's):
 * such a root must never vouch for an identity of the sidecar's own domain, on the inbound
 * (a caller's certificate) or the outbound (the certificate of the service called), since
 * the TLS library checks chains, not trust domains. And a first certificate is not sought
 * from a "control plane" that a bundle of several domains could vouch for.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { issueLeaf, loadCa } from "../../src/ca/authority.ts";
import { certToPem, exportPrivateKeyPem, generateKeyPair } from "../../src/pki/x509.ts";
import { mesh } from "../helpers/cli.ts";
import { MeshFixture } from "../helpers/mesh-fixture.ts";
import { runMesh } from "../helpers/procs.ts";

const TD = "mesh.local";
const fx = new MeshFixture();
const partnerCa = join(fx.tmp.path, "partner-ca");
let bothBundles: string;
let forgedOrders: { cert: string; key: string };
let forgedPayments: { cert: string; key: string };

/** A leaf for `service` in mesh.local, signed by the partner's intermediate. */
async function forged(service: string): Promise<{ cert: string; key: string }> {
  const partner = await loadCa(partnerCa);
  const keys = await generateKeyPair();
  const leaf = await issueLeaf(partner.intermediate, { trustDomain: TD, namespace: "default", service, dnsNames: [], ttlMs: 3600_000, publicKey: keys.publicKey });
  return { cert: certToPem(leaf.cert) + certToPem(partner.intermediate.cert), key: await exportPrivateKeyPem(keys.privateKey) };
}

beforeAll(async () => {
  await fx.init(TD);
  expect((await mesh("ca", "init", "--trust-domain", "partner.test", "--out", partnerCa)).code).toBe(0);
  bothBundles = readFileSync(join(fx.ca, "bundle.pem"), "utf8") + readFileSync(join(partnerCa, "bundle.pem"), "utf8");
  for (const service of ["orders", "payments"]) writeFileSync(join(await fx.issue(service), "bundle.pem"), bothBundles);
  forgedOrders = await forged("orders");
  forgedPayments = await forged("payments");
});
afterAll(() => fx.close());

async function call(port: number, client: { cert: string; key: string }): Promise<string> {
  try {
    const res = await fetch(`https://127.0.0.1:${port}/`, { tls: { ...client, ca: bothBundles, checkServerIdentity: () => undefined }, keepalive: false });
    return `status ${res.status}: ${await res.text()}`;
  } catch {
    return "refused";
  }
}

test("inbound: a caller whose mesh.local certificate the partner's root signed is refused; one of mesh.local's own gets through", async () => {
  const service = fx.echo("payments");
  const payments = await fx.proxy("payments", service.url);
  expect(await call(payments.ports.inbound, forgedOrders)).toBe("refused");
  const dir = join(fx.tmp.path, "certs", "orders");
  const real = { cert: readFileSync(join(dir, "chain.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8") };
  expect(await call(payments.ports.inbound, real)).toContain("status 200");
  expect(service.hits).toBe(1);
});

test("outbound: a server whose mesh.local certificate the partner's root signed is not taken for the service", async () => {
  let reached = 0;
  const impostor = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: forgedPayments.cert, key: forgedPayments.key },
    fetch: () => {
      reached++;
      return new Response("impostor");
    },
  });
  try {
    const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-impostor", { payments: [impostor.port!] }));
    const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/`, { headers: { host: "payments" } });
    expect(res.status).toBe(502);
    expect(await res.text()).not.toContain("impostor");
    expect(reached).toBe(0);
  } finally {
    impostor.stop(true);
  }
});

test("a first certificate is not sought with a bundle of two trust domains: the file and both domains are named", () => {
  const bundle = join(fx.tmp.path, "both.pem");
  const token = join(fx.tmp.path, "token");
  writeFileSync(bundle, bothBundles);
  writeFileSync(token, "a.b.c");
  const r = runMesh(["proxy", "--service", "fresh", "--upstream", "http://127.0.0.1:9", "--certs-dir", join(fx.tmp.path, "fresh"),
    "--control-plane", "https://127.0.0.1:9", "--join-token-file", token, "--ca", bundle]);
  expect(r.code).toBe(65);
  expect(r.err).toContain(bundle);
  expect(r.err).toContain("holds roots of 2 trust domains (mesh.local, partner.test)");
});
