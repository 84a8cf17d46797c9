/** ControlPlaneConfig: settings of the control plane (API, store, CA, policies). */
import { z } from "zod";
import { always, listener, noListenerClash, NonEmpty, TrustDomain } from "../common";
import { registerKind, type ManifestOf } from "../manifest";

export const Store = z
  .strictObject({
    type: z.enum(["embedded", "etcd"]).default("embedded").describe("Where state is kept: embedded (in dataDir) or etcd; default embedded."),
    endpoints: z.array(NonEmpty).min(1).optional().describe("etcd endpoints, e.g. http://127.0.0.1:2379; required when type is etcd."),
  })
  .superRefine((store, ctx) => {
    if (store.type === "etcd" && store.endpoints === undefined)
      ctx.addIssue({ code: "custom", path: ["endpoints"], message: "required when type is etcd" });
    if (store.type !== "etcd" && store.endpoints !== undefined)
      ctx.addIssue({ code: "custom", path: ["endpoints"], message: "only allowed when type is etcd" });
  }, always)
  .prefault({})
  .describe("The state store.");

export const ControlPlaneConfigSpec = z
  .strictObject({
    api: listener("0.0.0.0", 15010, "Listener for sidecars and the CLI (mTLS)."),
    admin: listener("127.0.0.1", 15011, "Listener for health, readiness and metrics."),
    trustDomain: TrustDomain.default("mesh.local").describe('Trust domain of SPIFFE IDs; default "mesh.local".'),
    dataDir: NonEmpty.default("./data").describe('Directory for state; default "./data".'),
    store: Store,
    ca: z
      .strictObject({ dir: NonEmpty.default("certs").describe('Directory of the CA key and certificate; default "certs".') })
      .prefault({})
      .describe("The certificate authority."),
    policiesDir: NonEmpty.default("policies").describe('Directory of manifests loaded at start; default "policies".'),
  })
  .superRefine(noListenerClash(["api", "admin"]), always)
  .describe("Settings of the control plane.");

export const ControlPlaneConfig = registerKind({
  kind: "ControlPlaneConfig",
  spec: ControlPlaneConfigSpec,
  description: "Settings of the control plane: its listeners, state store, CA and policy directory.",
});
export type ControlPlaneConfig = ManifestOf<typeof ControlPlaneConfig>;
