/**
 * Deciding, in Bun.connect's `handshake` callback, whether the server is the one we meant.
 *
 * Bun.connect ignores `checkServerIdentity` and always checks the server certificate
 * against the connect hostname; mesh endpoints are IPs and SPIFFE certificates carry
 * only a URI SAN, so that check always fails. With `rejectUnauthorized: true` Bun then
 * closes every connection, so the client connects with `rejectUnauthorized: false`
 * (chain still verified against `ca`, the verdict handed to `handshake`) and enforces
 * the verdict here, before a byte is written:
 *
 *  - no authorization error, or exactly ERR_TLS_CERT_ALTNAME_INVALID: the chain verified.
 *    Bun runs its hostname check only on a chain that verified; any chain error (unknown
 *    CA, expired, not yet valid, self-signed, missing or foreign intermediate) is reported
 *    instead of the hostname mismatch. The tests pin this for each of those cases, so a
 *    Bun upgrade that changes it fails loudly rather than accepting unverified chains.
 *  - anything else: refused.
 * Then the SPIFFE identity of the leaf is checked by the caller's `verifyPeer`.
 */
import type { Socket } from "bun";
import { PeerIdentityError } from "./errors.ts";

/** The only authorization error tolerated: the hostname check we cannot switch off. */
const HOSTNAME_MISMATCH = "ERR_TLS_CERT_ALTNAME_INVALID";

/** The leaf certificate, DER, in a buffer of its own. */
export type VerifyPeer = (leafDer: Uint8Array<ArrayBuffer>) => Error | undefined;

/** Undefined when the server may be talked to; the error to fail the connect with otherwise. */
export function handshakeVerdict(socket: Socket<any>, authError: Error | null, verifyPeer: VerifyPeer): Error | undefined {
  if (authError !== null) {
    const code = (authError as { code?: unknown }).code;
    if (code !== HOSTNAME_MISMATCH) {
      return new PeerIdentityError(`peer certificate rejected: ${authError.message}${typeof code === "string" ? ` (${code})` : ""}`);
    }
  }
  const raw = socket.getPeerX509Certificate()?.raw;
  if (!raw || raw.byteLength === 0) return new PeerIdentityError("peer presented no certificate");
  try {
    return verifyPeer(new Uint8Array(raw));
  } catch (err) {
    return new PeerIdentityError(`peer identity check failed: ${(err as Error).message}`);
  }
}
