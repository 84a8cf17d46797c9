/** A pooled, multiplexed mTLS client (the sidecars' own) to a listener on loopback, for in-process tests. */
import { peerIdFromDer } from "../../src/proxy/peer-identity.ts";
import { Http1Pool, PeerIdentityError } from "../../src/proxy/transport/h1/index.ts";
import { pemOf, type Issued } from "./certs.ts";

/**
 * Presents `leaf` (under `issuer`, trusting `root`) and accepts only `server`'s SPIFFE ID in
 * `trustDomain`; `served` sees each accepted server certificate (DER), one per handshake.
 */
export function muxPool(port: number, client: { leaf: Issued; issuer: Issued; root: Issued }, server: string, trustDomain: string, served: (der: Uint8Array) => void, idleTimeoutMs = 30_000): Http1Pool {
  return new Http1Pool({
    host: "127.0.0.1",
    port,
    connectTimeoutMs: 2000,
    idleTimeoutMs,
    multiplex: true,
    tls: {
      cert: pemOf(client.leaf, client.issuer),
      key: client.leaf.keyPem,
      ca: client.root.pem,
      verifyPeer: (der) => {
        const id = peerIdFromDer(der, trustDomain);
        if (!id.ok || id.spiffeId !== server) return new PeerIdentityError(`not ${server}`);
        served(der);
        return undefined;
      },
    },
  });
}
