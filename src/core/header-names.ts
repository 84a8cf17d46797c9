/**
 * The headers the proxy owns, in one list for the relay that removes them and for the
 * schemas that refuse them in policies: hop-by-hop headers are per connection and never
 * forwarded (RFC 9110 §7.6.1); identity headers are set only by the proxy.
 */
export const CLIENT_ID_HEADER = "x-mesh-client-id";
/** Names a tunnel to the inbound's loopback server, which reads the caller's identity by it (loopback-tunnel.ts). */
export const TUNNEL_HEADER = "x-mesh-tunnel";

// http2-settings belongs to an h2c upgrade of one connection (RFC 7540 §3.2.1); the request guard refuses it first.
export const HOP_BY_HOP_HEADERS = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings", "proxy-authenticate", "proxy-authorization"];
export const IDENTITY_HEADERS = [CLIENT_ID_HEADER, "x-forwarded-client-cert", "l5d-client-id", TUNNEL_HEADER];
/**
 * What a sidecar's own answers carry: x-mesh-error names why it answered, x-mesh-overflow
 * which limit refused the call. A caller's sidecar leaves a route's response edits off
 * such an answer, so they are taken only from a sidecar: a service's response, or one
 * from a destination outside the mesh, has them removed.
 */
export const MESH_ANSWER_HEADERS = ["x-mesh-error", "x-mesh-overflow"];
