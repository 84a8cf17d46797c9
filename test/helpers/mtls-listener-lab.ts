/**
 * The inbound mTLS listener in process, for tests of what ends its connections: a CA
 * (root, intermediate) for one trust domain, payments' certificate to serve with, a
 * listener whose requests to /hold are never answered and whose carried TCP echoes, and a
 * raw TLS client that presents a caller's certificate.
 */
import type { Socket } from "bun";
import type { CredentialEnd } from "../../src/proxy/transport/credential-expiry.ts";
import { H1Listener, type ListenerTls, type TcpSocketOwner } from "../../src/proxy/transport/h1-server/listener.ts";
import { alpnWire } from "../../src/proxy/transport/mux/frame.ts";
import { makeIntermediate, makeLeaf, makeRoot, pemOf, type Issued } from "./certs.ts";

export const TD = "example.org";
export const PAYMENTS = `spiffe://${TD}/ns/default/sa/payments`;
export const ORDERS = `spiffe://${TD}/ns/default/sa/orders`;
export const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: payments\r\n\r\n`;

export type ListenerLab = Awaited<ReturnType<typeof listenerLab>>;

export async function listenerLab() {
  const root = await makeRoot({ trustDomain: TD });
  const int = await makeIntermediate(root);
  const payments = await makeLeaf(int, { uris: [PAYMENTS] });
  const cleanups: (() => void)[] = [];

  const tlsOf = (leaf: Issued, issuer = int, bundle = root.pem): ListenerTls => ({ cert: pemOf(leaf, issuer), key: leaf.keyPem, ca: bundle, trustDomain: TD, notAfterMs: leaf.cert.notAfter.getTime() });

  /**
   * A listener serving with `tls`; what ended connections for their certificates, when
   * requests were served, carried connections closed. `withdrawnTrustGraceMs`: shorter than
   * the default ten seconds, to keep tests of a withdrawn root short.
   */
  function listen(tls: ListenerTls, withdrawnTrustGraceMs?: number) {
    const ends: CredentialEnd[] = [];
    const served: number[] = [];
    const tcpClosed = { count: 0 };
    const listener = new H1Listener({
      hostname: "127.0.0.1",
      port: 0,
      tls,
      ...(withdrawnTrustGraceMs !== undefined && { withdrawnTrustGraceMs }),
      limits: { maxBodyBytes: 1 << 20, idleTimeoutS: 30 },
      events: { onRefused: () => {}, onOpen: () => {}, onCredentialEnd: (why) => ends.push(why) },
      tcp: (socket: Socket<unknown>): TcpSocketOwner => ({
        onData: (chunk) => void socket.write(chunk),
        onDrain: () => {},
        onTimeout: () => {},
        onEnd: () => void socket.end(),
        onClose: () => void tcpClosed.count++,
      }),
      handler: {
        refused: () => {},
        upgrade: () => {},
        request(req, res) {
          served.push(Date.now());
          if (req.head.pathAndQuery !== "/hold") res.respond(200, { "content-type": "text/plain" }, `hi ${req.peer}`);
        },
      },
    });
    const port = listener.listen();
    cleanups.push(() => listener.closeAll());
    return { listener, port, ends, served, tcpClosed };
  }

  /** A raw TLS client presenting `leaf` (under `issuer`): what it read, how and when its connection ended, and whether its handshake passed (`ready`). */
  async function client(port: number, leaf: Issued, o: { alpn?: string; issuer?: Issued; ca?: string } = {}) {
    const state = { text: "", closed: false, closedAt: 0, error: undefined as string | undefined, handshake: false, socket: undefined as Socket<undefined> | undefined };
    let settle!: (ok: boolean) => void;
    const ready = new Promise<boolean>((r) => (settle = r));
    state.socket = await Bun.connect<undefined>({
      hostname: "127.0.0.1",
      port,
      tls: { cert: pemOf(leaf, o.issuer ?? int), key: leaf.keyPem, ca: o.ca ?? root.pem, rejectUnauthorized: false, ALPNProtocols: alpnWire([o.alpn ?? "http/1.1"]) },
      socket: {
        // Its own check of the server's name fails (no IP SAN) and is not asked for: the handshake is done.
        handshake: () => {
          state.handshake = true;
          settle(true);
        },
        data: (_s, chunk) => void (state.text += chunk.toString()),
        error: (_s, err) => void (state.error ??= err.message),
        close: (_s, err) => {
          if (err) state.error ??= err.message;
          state.closed = true;
          state.closedAt = Date.now();
          settle(false);
        },
      },
    });
    return { state, ready };
  }

  return {
    root,
    int,
    payments,
    tlsOf,
    listen,
    client,
    /** Runs `cleanup` at close(), before what the lab made. */
    defer: (cleanup: () => void) => void cleanups.push(cleanup),
    close: () => {
      for (const c of cleanups.splice(0).reverse()) c();
    },
  };
}
