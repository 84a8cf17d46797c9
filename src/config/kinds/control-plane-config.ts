/** ControlPlaneConfig: settings of the control plane (API, store, CA, policies). */
import { z } from "zod";
import { always, listener, loopbackListener, MaxConnections, noListenerClash, NonEmpty, TrustDomain } from "../common";
import { certTtlProblem, leaseTtlProblem } from "../../ca/lifetimes.ts";
import { Duration, durationSchema, TimerDuration } from "../duration";
import { registerKind, type ManifestOf } from "../manifest";

/** What operators off the host use, since the admin listener is loopback only. */
export const CONTROL_PLANE_ADMIN_ELSEWHERE = "from elsewhere, the admin API is served over mTLS on the API listener to --admin-identity";

export const Store = z
  .strictObject({
    type: z.enum(["embedded", "etcd"]).default("embedded").describe("Where state is kept: embedded (in dataDir) or etcd; default embedded."),
    endpoints: z.array(NonEmpty).min(1).optional().describe("etcd endpoints, e.g. https://10.0.0.1:2379; required when type is etcd."),
    tls: z
      .strictObject({
        ca: NonEmpty.optional().describe("The CA (PEM file) that signed the etcd members' certificates; default: the system's."),
        cert: NonEmpty.optional().describe("A client certificate (PEM file) for members that ask for one (etcd --client-cert-auth); with key."),
        key: NonEmpty.optional().describe("The client certificate's key (PEM file); with cert."),
      })
      .optional()
      .describe("TLS to etcd (https:// endpoints); flags --etcd-ca, --etcd-cert and --etcd-key override it."),
  })
  .superRefine((store, ctx) => {
    if (store.type === "etcd" && store.endpoints === undefined)
      ctx.addIssue({ code: "custom", path: ["endpoints"], message: "required when type is etcd" });
    if (store.type !== "etcd" && store.endpoints !== undefined)
      ctx.addIssue({ code: "custom", path: ["endpoints"], message: "only allowed when type is etcd" });
    if (store.type !== "etcd" && store.tls !== undefined) ctx.addIssue({ code: "custom", path: ["tls"], message: "only allowed when type is etcd" });
  }, always)
  .prefault({})
  .describe("The state store.");

/** A duration held to a lifetime's bounds (ca/lifetimes.ts), as the flags are. */
function bounded(duration: typeof Duration, problem: (ms: number) => string | undefined) {
  return durationSchema(
    duration.superRefine((ms, ctx) => {
      const bad = problem(ms);
      if (bad !== undefined) ctx.addIssue({ code: "custom", message: bad });
    }),
  );
}

export const ControlPlaneConfigSpec = z
  .strictObject({
    api: listener("0.0.0.0", 15010, "Listener for sidecars (mTLS): registration, config, certificate renewal."),
    admin: loopbackListener("127.0.0.1", 15011, "Listener for the admin API (bearer token) and health; loopback only.", CONTROL_PLANE_ADMIN_ELSEWHERE),
    bootstrap: listener("0.0.0.0", 15012, "Listener where new sidecars trade a join token and a CSR for their first certificate (TLS)."),
    trustDomain: TrustDomain.default("mesh.local").describe('Trust domain of SPIFFE IDs; default "mesh.local".'),
    dataDir: NonEmpty.default("./data").describe('Directory for state; default "./data".'),
    store: Store,
    ca: z
      .strictObject({ dir: NonEmpty.default("certs").describe('Directory of the CA key and certificate; default "certs".') })
      .prefault({})
      .describe("The certificate authority."),
    policiesDir: NonEmpty.default("policies").describe('Directory of manifests loaded at start and watched; default "policies".'),
    certTtl: bounded(Duration, certTtlProblem).prefault("24h").describe('Lifetime of the workload certificates it signs, 2s to 720h; renewed at about half; default "24h".'),
    leaseTtl: bounded(TimerDuration, leaseTtlProblem).prefault("10s").describe('How long a registration outlives its last heartbeat, at least 1s; default "10s".'),
    adminIdentities: z.array(NonEmpty).default([]).describe("SPIFFE IDs allowed to use the admin API over mTLS, besides the admin token."),
    maxEndpointsPerService: z.int().min(1).default(256).describe("Endpoints one service may have registered at once (its replicas); past it a registration is answered 429; default 256."),
    maxConnections: MaxConnections.describe("Connections the mTLS API listener holds before closing new ones at accept; default a sixth of the open-files limit (each takes three)."),
  })
  .superRefine(noListenerClash(["api", "admin", "bootstrap"]), always)
  .describe("Settings of the control plane.");

export const ControlPlaneConfig = registerKind({
  kind: "ControlPlaneConfig",
  spec: ControlPlaneConfigSpec,
  description: "Settings of the control plane: its listeners, state store, CA and policy directory.",
});
export type ControlPlaneConfig = ManifestOf<typeof ControlPlaneConfig>;
