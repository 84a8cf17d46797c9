/**
 * The API sidecars call over mTLS. Every route acts for the caller's proven SPIFFE ID
 * and nothing else: a proxy registers, heartbeats and subscribes as its own service,
 * and renews only its own certificate (each renewal, signed or refused, audited).
 */
import { Hono } from "hono";
import { z } from "zod";
import { assertOwnService, type Registry } from "../registry.ts";
import { heldCertificate, Registration } from "../registration.ts";
import type { ProvenCertificate } from "../../proxy/transport/tls-bridge.ts";
import { recordAck } from "../proxy-status.ts";
import type { AuditLog } from "../audit.ts";
import type { CertificateSigner } from "../signer.ts";
import type { Subscriptions } from "../subscriptions.ts";
import type { Store } from "../../store/store.ts";
import { BadRequest, body, onError } from "./http.ts";
import { dnsLabel } from "../../config/common.ts";

export interface ProxyApiDeps {
  store: Store;
  registry: Registry;
  subscriptions: Subscriptions;
  signer: CertificateSigner;
  audit: AuditLog;
  /** Longest a config poll is held open. */
  maxWaitMs: number;
}

/** The caller's proven SPIFFE ID and certificate, and its address ("address:port") as the listener saw it. */
export type Caller = { Bindings: { identity: string; peer?: string; certificate?: ProvenCertificate } };

const Heartbeat = z.strictObject({ registration: Registration, leaseId: z.string().min(1).max(64), healthy: z.boolean().default(true) });
const Register = z.strictObject({ registration: Registration, healthy: z.boolean().default(true) });
const Ack = z.strictObject({
  registration: Registration,
  version: z.string().regex(/^[0-9a-f]{1,64}$/, "expected a config version (hex) as the control plane sent it"),
  error: z.string().max(10_000).optional(),
  /** The services it subscribed to, so "latest" is computed for the same view. */
  calls: z.array(z.string().min(1).max(253)).max(1000).optional(),
});
/** A service a proxy calls: `name` (in its own namespace) or `name.namespace`, each a DNS label. */
const CALLED = /^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)?$/;
const MAX_CALLS = 1000;

/** The `calls` of a config request, checked: each is a snapshot's cache key, so nothing unbounded gets in. */
function callsOf(text: string | undefined): string[] | undefined {
  if (text === undefined) return undefined;
  const names = text.split(",").filter(Boolean);
  if (names.length > MAX_CALLS) throw new BadRequest(`calls: at most ${MAX_CALLS} services`);
  const bad = names.find((name) => !CALLED.test(name));
  if (bad !== undefined) throw new BadRequest(`calls: ${JSON.stringify(bad.slice(0, 80))} is not a service (name or name.namespace)`);
  return names;
}

const Renew = z.strictObject({ namespace: dnsLabel("namespace"), service: dnsLabel("service"), csr: z.string().min(1).max(16_384) });

export function proxyApi(deps: ProxyApiDeps): Hono<Caller> {
  const app = new Hono<Caller>();
  app.onError(onError);

  app.post("/v1/register", async (c) => {
    const { registration, healthy } = await body(c, Register);
    return c.json(await deps.registry.register(c.env.identity, registration, healthy, heldCertificate(c.env.certificate)));
  });
  app.post("/v1/heartbeat", async (c) => {
    const { registration, leaseId, healthy } = await body(c, Heartbeat);
    await deps.registry.heartbeat(c.env.identity, registration, leaseId, healthy, heldCertificate(c.env.certificate));
    return c.json({ ok: true });
  });
  app.post("/v1/deregister", async (c) => {
    const { registration, leaseId } = await body(c, Heartbeat);
    await deps.registry.deregister(c.env.identity, registration, leaseId);
    return c.json({ ok: true });
  });

  app.get("/v1/config", async (c) => {
    const namespace = c.req.query("namespace") ?? "";
    const service = c.req.query("service") ?? "";
    assertOwnService(c.env.identity, { namespace, service });
    const calls = callsOf(c.req.query("calls"));
    const waitMs = Math.min(Number(c.req.query("waitMs") ?? 0) || 0, deps.maxWaitMs);
    const snap = await deps.subscriptions.poll({ namespace, service, calls }, c.req.query("version"), waitMs, c.req.raw.signal);
    return snap ? c.body(snap.json, 200, { "content-type": "application/json" }) : c.body(null, 304);
  });
  app.post("/v1/config/ack", async (c) => {
    const { registration, version, error, calls } = await body(c, Ack);
    await recordAck(deps.store, c.env.identity, registration, version, error, calls);
    return c.json({ ok: true });
  });

  app.post("/v1/certificates/renew", async (c) => {
    const { identity, peer } = c.env;
    try {
      const { namespace, service, csr } = await body(c, Renew);
      assertOwnService(identity, { namespace, service });
      const signed = await deps.signer.sign(await deps.signer.check(csr, namespace, service));
      deps.audit.issued({ via: "renewal", spiffeId: signed.spiffeId, serial: signed.serial, notAfter: signed.notAfter, peer });
      return c.json(signed);
    } catch (err) {
      deps.audit.refused({ via: "renewal", reason: (err as Error).message, peer, claimed: identity });
      throw err;
    }
  });

  app.all("*", (c) => c.json({ error: `no route ${c.req.method} ${c.req.path}` }, 404));
  return app;
}

export { BadRequest };
