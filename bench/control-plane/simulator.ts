/**
 * A simulator process: many simulated proxies against one control plane. It gets a
 * certificate per service (join token + CSR, the real bootstrap), then answers the
 * coordinator on a loopback control port:
 *   POST /register   register every proxy (bounded concurrency), start heartbeats
 *   POST /subscribe  start every proxy's long poll
 *   GET  /status?since=T    counts and errors (SimStatus)
 *   GET  /times?version=V   receive and ack times of V (SimTimes)
 * Usage: bun simulator.ts CONFIG.json; prints {"ready":true,"port":P} once bootstrapped.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { WorkloadCerts } from "../../src/proxy/certs.ts";
import { bootstrap } from "../../src/proxy/control/bootstrap.ts";
import { ControlPlaneClient } from "../../src/proxy/control/cp-client.ts";
import type { SimConfig, SimErrors, SimStatus, SimTimes } from "./sim-protocol.ts";
import { SimProxy } from "./sim-proxy.ts";

/** Per simulator: enough to keep the control plane busy without queueing past the client's 5 s call timeout. */
const REGISTER_CONCURRENCY = 8;

const config = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as SimConfig;
const errors: SimErrors = { register: 0, heartbeat: 0, poll: 0, ack: 0, messages: {} };

const certs = new Map<string, WorkloadCerts>();
for (const [service, token] of Object.entries(config.tokens)) {
  const c = await bootstrap({
    url: config.bootstrapUrl,
    token,
    bundlePem: config.bundlePem,
    trustDomain: config.trustDomain,
    namespace: "default",
    service,
    certsDir: join(config.certsDir, service),
  });
  certs.set(service, c);
}

const shared = new Map<string, ControlPlaneClient>();
const clientFor = (service: string): ControlPlaneClient => {
  const make = () => new ControlPlaneClient([config.apiUrl], certs.get(service)!);
  if (config.clientPer === "proxy") return make();
  let c = shared.get(service);
  if (!c) shared.set(service, (c = make()));
  return c;
};
const proxies = config.proxies.map(
  (p) => new SimProxy(clientFor(p.service), { namespace: "default", service: p.service, address: p.address, port: p.port, weight: 1 }, errors),
);

async function registerAll(): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < proxies.length) await proxies[next++]!.register().catch(() => undefined);
  };
  await Promise.all(Array.from({ length: Math.min(REGISTER_CONCURRENCY, proxies.length) }, worker));
}

function status(since: number): SimStatus {
  const versions: Record<string, number> = {};
  let ackedSince = 0;
  for (const p of proxies) {
    const last = p.last;
    if (!last) continue;
    versions[last.version] = (versions[last.version] ?? 0) + 1;
    if (last.ackedAt >= since) ackedSince++;
  }
  return { proxies: proxies.length, registered: proxies.filter((p) => p.registered).length, ackedSince, versions, errors };
}

function times(version: string): SimTimes {
  const items: SimTimes["items"] = [];
  for (const p of proxies) {
    const h = p.history.find((e) => e.version === version);
    if (h) items.push({ receivedAt: h.receivedAt, ackedAt: h.ackedAt });
  }
  return { items, missing: proxies.length - items.length };
}

const control = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  idleTimeout: 120,
  async fetch(req) {
    const url = new URL(req.url);
    const route = `${req.method} ${url.pathname}`;
    if (route === "POST /register") {
      await registerAll();
      return Response.json(status(0));
    }
    if (route === "POST /subscribe") {
      for (const p of proxies) p.subscribe();
      return Response.json({ ok: true });
    }
    if (route === "GET /status") return Response.json(status(Number(url.searchParams.get("since") ?? 0)));
    if (route === "GET /times") return Response.json(times(url.searchParams.get("version") ?? ""));
    return new Response(`no route ${route}\n`, { status: 404 });
  },
});

const stop = () => {
  for (const p of proxies) p.stop();
  control.stop(true);
  process.exit(0);
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
console.log(JSON.stringify({ ready: true, port: control.port }));
