/**
 * Certificates renew at about half life, under traffic: the new certificate is used for
 * new connections in and out (the inbound listener is swapped, the outbound pools are
 * rebuilt), old connections finish, and no request fails. The control plane renews its own
 * the same way, and sidecars join and follow it long after the one it started with ended.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { connect } from "node:tls";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { tempDir } from "../helpers/cli.ts";
import { cpSidecar, eventually, serviceManifest, startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { echoService, type EchoService } from "../helpers/mesh-fixture.ts";
import { stopAll } from "../helpers/procs.ts";
import { endpointsSeenBy, steadyTraffic } from "../helpers/traffic.ts";

const tmp = tempDir("mesh-renew-");
const echoes: EchoService[] = [];
let cp: TestControlPlane;

beforeAll(async () => {
  cp = await startControlPlane(tmp.path, ["--cert-ttl", "6s"]);
  await cp.apply(serviceManifest("orders"), serviceManifest("payments"));
});
afterAll(async () => {
  await stopAll();
  for (const e of echoes) e.server.stop(true);
  tmp.cleanup();
});

async function sidecar(service: string, instance = "1") {
  const echo = echoService(service);
  echoes.push(echo);
  return { ...(await cpSidecar(cp, tmp.path, service, instance, echo.url)), certsDir: join(tmp.path, "certs", `${service}-${instance}`) };
}

async function expiresOf(adminPort: number): Promise<string> {
  return ((await (await fetch(`http://127.0.0.1:${adminPort}/config_dump`)).json()) as { certificateExpires: string }).certificateExpires;
}

/** The certificate a new TLS connection to `port` (an inbound listener, the control plane's API) is served with. */
function servedExpiry(port: number, certsDir: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: "127.0.0.1",
      port,
      cert: readFileSync(join(certsDir, "chain.pem")),
      key: readFileSync(join(certsDir, "key.pem")),
      ca: readFileSync(cp.bundle),
      checkServerIdentity: () => undefined,
    });
    socket.once("secureConnect", () => {
      resolve(new Date(socket.getPeerCertificate().valid_to).toISOString());
      socket.destroy();
    });
    socket.once("error", reject);
  });
}

test("renewal under traffic: new certificates in and out, no failed request", async () => {
  const payments = await sidecar("payments");
  const orders = await sidecar("orders");
  const ready = async () => (await fetch(`http://127.0.0.1:${orders.ports.outbound}/`, { headers: { host: "payments" } })).status === 200;
  expect(await eventually(ready, 10_000)).toBe(true);
  const traffic = steadyTraffic(orders.ports.outbound, "payments", 5);
  const first = await expiresOf(payments.ports.admin);
  const seen = new Set([first]);
  // Two renewals of each side, about 3 s apart.
  expect(await eventually(async () => (seen.add(await expiresOf(payments.ports.admin)), seen.size >= 3), 15_000, 200)).toBe(true);
  expect(await eventually(async () => (await expiresOf(orders.ports.admin)) !== first, 5_000)).toBe(true);
  const { failures } = await traffic.stop();
  expect(failures).toEqual([]);
  // A new connection is served the current certificate, not the one the listener started with.
  const now = await expiresOf(payments.ports.admin);
  expect(await servedExpiry(payments.ports.inbound, orders.certsDir)).toBe(now);
  expect(now).not.toBe(first);
}, 60_000);

test("the control plane renews its own certificate: sidecars join and get config long after the first one ended", async () => {
  const servingCert = async () => ((await (await cp.admin("GET", "/v1/status")).json()) as { ca: { servingCert: string } }).ca.servingCert;
  const first = await servingCert();
  const seen = new Set([first]);
  // Two renewals, about 3 s apart (6 s certificates), and past the first one's end.
  expect(await eventually(async () => (seen.add(await servingCert()), seen.size >= 3 && Date.now() > Date.parse(first) + 1000), 20_000, 200)).toBe(true);
  expect(cp.stderr()).toContain("control plane certificate renewed");
  // A sidecar that starts now bootstraps, registers and is found through the renewed certificate.
  const ledger = await sidecar("ledger");
  const orders = await sidecar("orders", "2");
  await cp.apply(serviceManifest("ledger"));
  expect(await eventually(async () => (await endpointsSeenBy(orders.ports.admin, "ledger")).length === 1, 15_000)).toBe(true);
  // The API port serves the current certificate to a new connection.
  expect(await servedExpiry(cp.ports.api, ledger.certsDir)).toBe(await servingCert());
}, 60_000);
