/**
 * Connections mesh redirect sent to the outbound listener that were bound for an address
 * the mesh does not know (`--unknown-destinations passthrough`, Istio's ALLOW_ANY): when
 * the redirected range also holds things outside the mesh (a Kubernetes Service CIDR with
 * services that have no sidecar, an external database), they go where the application
 * sent them, as if mesh were not there, instead of being read as calls to mesh services.
 *
 * The first bytes decide, once per connection (as Istio's sniffing does):
 *  - an HTTP/1.1 request head (a CONNECT too) whose Host names a mesh Service: the
 *    connection is read as HTTP, as any other on the outbound listener (mTLS, routing,
 *    policies);
 *  - anything else (TLS, another protocol, HTTP to a host the mesh does not know, a head
 *    that is not HTTP/1.1), or nothing within SNIFF_MS (a server that speaks first, as
 *    databases and mail servers do): carried as plain TCP to the original destination,
 *    with the bytes read so far first.
 * Once the first bytes begin a request line, the verdict waits for the whole head however
 * slowly it comes: a call to a mesh Service must never leave in the clear for want of
 * patience. A head still incomplete after HEAD_WAIT_MS is read as HTTP, whose own
 * head timeout answers it.
 * The sidecar's own connections are never redirected (mesh redirect leaves its user and
 * group out), so a passthrough connection goes out directly.
 */
import type { Socket } from "bun";
import { defaultDestinationPolicy } from "../../config/kinds/destination-policy.ts";
import type { Snapshot } from "../destinations.ts";
import { resolveHost } from "../destinations.ts";
import type { OriginalDestination } from "../original-destination.ts";
import { findRequestHeadEnd, parseRequestHead } from "../transport/h1/request-parse.ts";
import type { TcpSocketOwner } from "../transport/h1-server/listener.ts";
import { CarriedConnection, type CarriedResult } from "./carried.ts";
import { UpstreamLeg } from "./leg.ts";
import type { PipeReport } from "./pipe.ts";
import type { TcpReporter } from "./report.ts";
import { hostPort } from "../../core/ip-address.ts";

/** How long the client may keep quiet before the connection is taken for a server-first protocol. */
const SNIFF_MS = 100;
/** How long a request head that has begun may take to arrive whole before the listener's HTTP reading takes it over. */
const HEAD_WAIT_MS = 10_000;
/** The metric peer of every passthrough connection: one label, whatever the address. */
export const PASSTHROUGH_PEER = "passthrough";
const PLAIN = [false, false] as const;
const DEFAULTS = defaultDestinationPolicy("passthrough").timeouts;
/** The longest method token mesh reads as HTTP ("OPTIONS"), and the space after it. */
const MAX_METHOD_BYTES = 8;

export interface PassthroughDeps {
  snapshot: () => Snapshot;
  /** Makes the carried connection the socket's owner (and counts it among the open ones). */
  carry: (sock: Socket<unknown>, original: OriginalDestination) => PassthroughConnection;
}

/**
 * Takes a redirected connection to an unknown address: sniffs its first bytes, then hands
 * it to `http` (with what was read) or carries it to `original`. The owner of the socket's
 * events until then.
 */
export function sniffRedirected(sock: Socket<unknown>, original: OriginalDestination, http: (initial: Buffer) => void, deps: PassthroughDeps): TcpSocketOwner {
  return new Sniffer(sock, original, http, deps);
}

class Sniffer implements TcpSocketOwner {
  private read: Buffer = Buffer.alloc(0);
  private timer: Timer;
  private decided = false;

  constructor(
    private readonly sock: Socket<unknown>,
    private readonly original: OriginalDestination,
    private readonly http: (initial: Buffer) => void,
    private readonly deps: PassthroughDeps,
  ) {
    sock.setNoDelay(true);
    this.timer = setTimeout(() => this.carry(false), SNIFF_MS);
  }

  onData(chunk: Buffer): void {
    if (this.decided) return;
    this.read = this.read.byteLength === 0 ? Buffer.from(chunk) : Buffer.concat([this.read, chunk]);
    const verdict = meshHttp(this.read, this.deps.snapshot());
    if (verdict === "mesh") return this.serveHttp();
    if (verdict === "other") return this.carry(false);
    if (this.read.byteLength === chunk.byteLength) {
      // A request line has begun: no longer a question of silence.
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.serveHttp(), HEAD_WAIT_MS);
    }
  }

  onDrain(): void {}

  /** The client ended its side before a verdict: what it sent goes on, and its FIN after it. */
  onEnd(): void {
    if (!this.decided) this.carry(true);
  }

  onTimeout(): void {
    if (!this.decided) this.carry(false);
  }

  onClose(): void {
    this.decided = true;
    clearTimeout(this.timer);
  }

  private serveHttp(): void {
    if (this.decided) return;
    this.decided = true;
    clearTimeout(this.timer);
    this.http(this.read);
  }

  private carry(ended: boolean): void {
    if (this.decided) return;
    this.decided = true;
    clearTimeout(this.timer);
    const conn = this.deps.carry(this.sock, this.original);
    this.sock.data = conn;
    conn.start(this.read, ended);
  }
}

/** "mesh": an HTTP/1.1 head whose Host is a mesh Service; "wait": not known yet; "other": anything else. */
function meshHttp(buf: Buffer, snapshot: Snapshot): "mesh" | "wait" | "other" {
  // A method token (upper-case letters, as every method mesh relays) and a space, early.
  const space = buf.indexOf(0x20);
  const token = space < 0 ? Math.min(buf.byteLength, MAX_METHOD_BYTES + 1) : space;
  for (let i = 0; i < token; i++) if (buf[i]! < 0x41 || buf[i]! > 0x5a) return "other";
  if (space < 0) return token > MAX_METHOD_BYTES ? "other" : "wait";
  if (space === 0) return "other";
  try {
    const end = findRequestHeadEnd(buf, 0, 0);
    if (end < 0) return "wait";
    const head = parseRequestHead(buf, 0, end, undefined, true);
    return resolveHost(snapshot, head.host) !== undefined ? "mesh" : "other";
  } catch {
    // Not a head mesh would take: the destination's own server decides what it is.
    return "other";
  }
}

/** Plain TCP to where the application was connecting, as if no sidecar were there. */
export class PassthroughConnection extends CarriedConnection {
  constructor(
    client: Socket<unknown>,
    private readonly original: OriginalDestination,
    private readonly report: TcpReporter,
    private readonly gone: (c: CarriedConnection) => void,
  ) {
    super(client);
    report.opened();
  }

  start(initial: Buffer, ended: boolean): void {
    if (initial.byteLength > 0) this.hold(initial);
    if (ended) this.onEnd();
    new UpstreamLeg({ host: this.original.address, port: this.original.port, connectTimeoutMs: DEFAULTS.connect }, this);
  }

  ready(socket: Socket<UpstreamLeg>): void {
    if (this.finished) return void socket.terminate();
    this.join(socket, DEFAULTS, PLAIN);
  }

  failed(): void {
    this.refuse("connect-failure");
  }

  protected ended(result: CarriedResult, report: PipeReport | undefined): void {
    this.gone(this);
    const { address, port } = this.original;
    const authority = hostPort(address, port);
    this.report.ended(PASSTHROUGH_PEER, authority, authority, result, this.startedAt, report);
  }
}
