/** The kinds refused TLS peers are counted and warned about by: the reasons the TLS library and peer-identity.ts give. */
import { expect, test } from "bun:test";
import { tlsRefusalKind } from "../../../src/proxy/transport/tls-refusal-kind.ts";

test("each reason seen maps to its kind; anything else is a handshake failure", () => {
  const seen: [string, string][] = [
    ["error:100000c0:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE", "no-certificate"],
    ["no client certificate", "no-certificate"],
    ["unable to get local issuer certificate", "untrusted"],
    ["self-signed certificate", "untrusted"],
    ["certificate has expired", "expired"],
    ["peer certificate spiffe://mesh.local/ns/default/sa/orders expired at 2026-12-07T16:10:52.000Z", "expired"],
    ["peer certificate spiffe://mesh.local/ns/default/sa/orders is not valid before 2026-12-08T00:00:00.000Z", "not-yet-valid"],
    ["peer is in trust domain evil.example, expected mesh.local", "trust-domain"],
    ["no_uri_san: certificate CN=x has no URI SAN, so no SPIFFE ID", "not-a-workload-certificate"],
    ["peer leaf has CA=true", "not-a-workload-certificate"],
    ["error:10000410:SSL routines:OPENSSL_internal:SSLV3_ALERT_HANDSHAKE_FAILURE", "handshake"],
    ["handshake failed", "handshake"],
  ];
  expect(seen.map(([reason]) => [reason, tlsRefusalKind(reason)])).toEqual(seen);
});
