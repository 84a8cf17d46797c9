/**
 * First certificates, for proxies that have none yet: server-authenticated TLS, and a
 * join token in place of a client certificate. The token is checked, then the CSR,
 * and only then is one of the token's uses claimed in its store record
 * (join-token-records.ts) — so a malformed CSR does not burn a use, and redemptions on
 * any replicas, however concurrent, never exceed the token's uses. Every certificate
 * signed here, and every request refused, goes to the audit log with the client's address.
 */
import { Hono } from "hono";
import type { AuditLog } from "../audit.ts";
import { z } from "zod";
import { JoinTokenError, verifyJoinToken, type TokenKey, type VerifiedJoinToken } from "../join-token.ts";
import { redeemJoinToken } from "../join-token-records.ts";
import type { CertificateSigner } from "../signer.ts";
import { isControlPlane } from "../well-known.ts";
import type { Store } from "../../store/store.ts";
import { body, onError } from "./http.ts";

export interface BootstrapDeps {
  store: Store;
  signer: CertificateSigner;
  tokenKey: TokenKey;
  audit: AuditLog;
}

/** What the listener knows of the client: its address, through the bridge in front. */
export interface BootstrapCaller {
  Bindings: { peer?: string };
}

const Bootstrap = z.strictObject({ token: z.string().min(1).max(4096), csr: z.string().min(1).max(16_384) });

export function bootstrapApi(deps: BootstrapDeps): Hono<BootstrapCaller> {
  const app = new Hono<BootstrapCaller>();
  app.onError((err, c) => (err instanceof JoinTokenError ? c.json({ error: `join token refused: ${err.message}` }, 401) : onError(err, c)));
  app.post("/v1/bootstrap", async (c) => {
    const peer = c.env?.peer;
    let grant: VerifiedJoinToken | undefined;
    try {
      const { token, csr } = await body(c, Bootstrap);
      grant = await verifyJoinToken(token, deps.tokenKey, deps.signer.trustDomain);
      // A token minted for it all the same (a key from elsewhere, an older build) gets nothing.
      if (isControlPlane(grant.namespace, grant.service)) throw new JoinTokenError("it grants the control plane's own identity, which no workload is given");
      const request = await deps.signer.check(csr, grant.namespace, grant.service);
      await redeemJoinToken(deps.store, grant);
      const signed = await deps.signer.sign(request);
      deps.audit.issued({ via: "bootstrap", spiffeId: signed.spiffeId, serial: signed.serial, notAfter: signed.notAfter, peer, tokenId: grant.jti });
      return c.json(signed);
    } catch (err) {
      deps.audit.refused({ via: "bootstrap", reason: (err as Error).message, peer, claimed: grant?.spiffeId, tokenId: grant?.jti });
      throw err;
    }
  });
  app.all("*", (c) => c.json({ error: `no route ${c.req.method} ${c.req.path}; this port serves POST /v1/bootstrap` }, 404));
  return app;
}
