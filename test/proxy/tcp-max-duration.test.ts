/**
 * A carried connection cut at its tcpMaxDuration (tcp/pipe.ts abort) is reset at both
 * ends, never half-closed first: neither the client nor the service may read the end of
 * a cut-off stream as an orderly one. The pipe resets its sides one after the other, and
 * Bun runs a socket's close handler inside terminate(), without an error: the side reset
 * first must not be passed on to the other as its orderly end (a FIN, or an END frame the
 * callee's sidecar turns into the service's FIN) before that one's reset.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket, TCPSocketListener } from "bun";
import { TcpPipe, type PipeReport, type Side } from "../../src/proxy/tcp/pipe.ts";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { eventually } from "../helpers/wait.ts";

/** How a socket ended, as its own side saw it. */
interface Seen {
  fin: boolean;
  closed: boolean;
  error: string | undefined;
  text: string;
}
const fresh = (): Seen => ({ fin: false, closed: false, error: undefined, text: "" });
const recorder = (seen: (s: Socket<Seen>) => Seen) => ({
  data: (s: Socket<Seen>, d: Buffer) => void (seen(s).text += d.toString("latin1")),
  end: (s: Socket<Seen>) => void (seen(s).fin = true),
  error: (s: Socket<Seen>, e: Error) => void (seen(s).error ??= e.message),
  close: (s: Socket<Seen>, e?: Error) => {
    if (e) seen(s).error ??= e.message;
    seen(s).closed = true;
  },
});

/** An echo service that records how each of its connections ended. */
function recordingEcho() {
  const ends: Seen[] = [];
  const listener: TCPSocketListener<Seen> = Bun.listen<Seen>({
    hostname: "127.0.0.1",
    port: 0,
    allowHalfOpen: true,
    socket: {
      ...recorder((s) => s.data),
      open: (s) => void ends.push((s.data = fresh())),
      data: (s, d) => void s.write(d),
    },
  });
  return { listener, ends };
}

async function connect(port: number): Promise<{ seen: Seen; socket: Socket<Seen> }> {
  const seen = fresh();
  const socket = await Bun.connect<Seen>({ hostname: "127.0.0.1", port, allowHalfOpen: true, data: seen, socket: recorder(() => seen) });
  return { seen, socket };
}

describe("through a pair of sidecars", () => {
  const fx = fixtureFor("orders", "db");
  const svc = recordingEcho();
  let port = 0;
  afterAll(() => svc.listener.stop(true));

  beforeAll(async () => {
    const doc = (kind: string, spec: string) => `---\napiVersion: mesh.dev/v1alpha1\nkind: ${kind}\nmetadata:\n  name: db\nspec:\n${spec}`;
    const dbService = (endpoint?: number) =>
      doc("Service", `  ports:\n    - {name: pg, port: 5432, protocol: tcp, targetPort: ${svc.listener.port}}\n` + (endpoint ? `  endpoints:\n    - {address: 127.0.0.1, port: ${endpoint}}\n` : ""));
    const write = (name: string, text: string) => {
      const path = join(fx.tmp.path, `${name}.yaml`);
      writeFileSync(path, text);
      return path;
    };
    // Only the caller's sidecar knows the 1 s: the callee's cuts nothing, it passes on what it is told.
    const db = await fx.proxy("db", fx.echo("db-web").url, write("db", dbService()));
    const policy = doc("DestinationPolicy", "  service: db\n  timeouts: {tcpMaxDuration: 1s}\n");
    const caller = await fx.proxy("orders", fx.echo("orders").url, write("orders", dbService(db.ports.inbound) + policy), ["--tcp-upstream", "db:5432=127.0.0.1:0"]);
    port = (caller.ready as { tcp: number[] }).tcp[0]!;
  });

  test("cut at the caller's tcpMaxDuration: the client is reset, and the service reads a reset, never a FIN", async () => {
    const before = svc.ends.length;
    const { seen, socket } = await connect(port);
    socket.write("x");
    expect(await eventually(() => seen.text === "x", 5000)).toBe(true);
    expect(await eventually(() => seen.closed, 5000)).toBe(true);
    const service = svc.ends[before]!;
    expect(await eventually(() => service.closed, 3000)).toBe(true);
    // The client wrote nothing near the cut: its reset reads as one (an error, or a close with no FIN before it).
    expect({ clientFin: seen.fin }).toEqual({ clientFin: false });
    expect({ serviceFin: service.fin, serviceClosed: service.closed }).toEqual({ serviceFin: false, serviceClosed: true });
  }, 15_000);

  test("a client write that meets the reset fails, and Bun then reports the stream's end as a FIN: why a failed write counts as a reset", async () => {
    const { seen, socket } = await connect(port);
    socket.write("y");
    expect(await eventually(() => seen.text === "y", 5000)).toBe(true);
    // This process's loop is held through the cut at 1 s: the reset waits unread, and the write takes its error
    // (ECONNRESET, which Bun does not report); Linux then reads the end of the stream as 0 bytes.
    Bun.sleepSync(1500);
    const wrote = socket.write(".");
    expect(await eventually(() => seen.closed, 3000)).toBe(true);
    // Then the close, with or without an error as Bun happens to see it.
    expect({ wrote, fin: seen.fin }).toEqual({ wrote: -1, fin: true });
  }, 15_000);
});

describe("TcpPipe between two plain sockets", () => {
  test("reset at tcpMaxDuration: the side reset second reads no FIN before its reset", async () => {
    const upstream = recordingEcho();
    let pipe: TcpPipe | undefined;
    let report: PipeReport | undefined;
    const events = (side: Side) => ({
      data: (_s: Socket<unknown>, d: Buffer) => pipe?.data(side, d),
      drain: () => pipe?.drain(side),
      end: () => pipe?.end(side),
      close: (_s: Socket<unknown>, e?: Error) => pipe?.close(side, e),
      error() {},
    });
    const proxy: TCPSocketListener<undefined> = Bun.listen<undefined>({
      hostname: "127.0.0.1",
      port: 0,
      allowHalfOpen: true,
      socket: {
        ...events(0),
        open: (client) => {
          void Bun.connect({ hostname: "127.0.0.1", port: upstream.listener.port, allowHalfOpen: true, socket: events(1) }).then((up) => {
            pipe = new TcpPipe([client as Socket<unknown>, up as Socket<unknown>], [false, false], { tcpIdle: 0, tcpMaxDuration: 300 }, (r) => (report = r));
          });
        },
      },
    });
    try {
      const { seen, socket } = await connect(proxy.port);
      expect(await eventually(() => pipe !== undefined, 3000)).toBe(true);
      socket.write("z");
      expect(await eventually(() => seen.text === "z", 3000)).toBe(true);
      expect(await eventually(() => seen.closed && upstream.ends[0]?.closed === true, 3000)).toBe(true);
      expect({ clientFin: seen.fin, upstreamFin: upstream.ends[0]!.fin, error: report?.error }).toEqual({ clientFin: false, upstreamFin: false, error: "max-duration" });
    } finally {
      proxy.stop(true);
      upstream.listener.stop(true);
    }
  }, 10_000);
});
