/**
 * The command `mesh run` starts in tests. Its first stdout line is a JSON report of what it
 * found at start; then it acts by mode:
 *   report CODE   exit with CODE
 *   call URL      GET URL (through HTTP_PROXY), print the body, exit 0 on 2xx
 *   wait-term     stay up; on SIGTERM print "got SIGTERM" and exit 0
 *   ignore-term   stay up and ignore SIGTERM
 *   slow-term     stay up; on SIGTERM print "got SIGTERM", take 1.5 s to shut down (printing
 *                 whether the outbound listener still accepts then), exit 0
 *   serve PORT    answer HTTP on 127.0.0.1:PORT with the caller the sidecar passed on; on
 *                 SIGTERM stop listening, finish what is in flight, exit 0 a second later
 *   tcp VAR       connect to $VAR (host:port), send "ping", half-close, print what came back, exit 0
 */
export {}; // a module, for top-level await

const [mode, arg] = process.argv.slice(2);
const [outHost, outPort] = splitHostPort(process.env.MESH_OUTBOUND ?? "");

function splitHostPort(text: string): [string, number] {
  const i = text.lastIndexOf(":");
  return [text.slice(0, i).replace(/^\[|\]$/g, ""), Number(text.slice(i + 1))];
}

/** Whether the sidecar's outbound listener accepts a connection right now. */
async function outboundAccepting(): Promise<boolean> {
  try {
    const s = await Bun.connect({ hostname: outHost, port: outPort, socket: { data() {} } });
    s.end();
    return true;
  } catch {
    return false;
  }
}

// Checked before anything else: the sidecar must already be up when this process starts.
const accepting = await outboundAccepting();
const admin = `http://${process.env.MESH_ADMIN}`;
const ready = await fetch(`${admin}/ready`).then((r) => r.status, () => 0);
const dump = (await fetch(`${admin}/config_dump`).then((r) => r.json(), () => ({}))) as { listeners?: { inbound?: string } };
if (mode === "serve") {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: Number(arg),
    fetch: (req) => Response.json({ service: process.env.MESH_SERVICE, caller: req.headers.get("x-mesh-client-id") }),
  });
  // What a well-behaved service does: no new connections, in-flight requests finish.
  process.on("SIGTERM", () => {
    void server.stop(false);
    setTimeout(() => process.exit(0), 1000);
  });
}
if (mode === "wait-term") process.on("SIGTERM", () => (console.log("got SIGTERM"), process.exit(0)));
if (mode === "ignore-term") process.on("SIGTERM", () => undefined);
if (mode === "slow-term")
  process.on("SIGTERM", async () => {
    console.log("got SIGTERM");
    await Bun.sleep(1500);
    console.log(`outbound during shutdown: ${await outboundAccepting()}`);
    process.exit(0);
  });
console.log(
  JSON.stringify({
    pid: process.pid,
    accepting,
    ready,
    inbound: Number(dump.listeners?.inbound?.split(":").pop()),
    outbound: outPort,
    admin: Number(process.env.MESH_ADMIN?.split(":").pop()),
    env: {
      MESH_SERVICE: process.env.MESH_SERVICE,
      HTTP_PROXY: process.env.HTTP_PROXY,
      http_proxy: process.env.http_proxy,
      NO_PROXY: process.env.NO_PROXY,
      // The sidecar's engine settings are its own (runtime-tuning.ts): never the service's.
      runtime: Object.keys(process.env).filter((k) => k.startsWith("BUN_JSC_") || k.startsWith("MESH_RUNTIME_")),
      tcp: Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("MESH_TCP_"))),
    },
  }),
);

if (mode === "report") process.exit(Number(arg));
if (mode === "call") {
  const res = await fetch(arg!);
  console.log(await res.text());
  process.exit(res.ok ? 0 : 1);
}
if (mode === "tcp") {
  const [host, port] = splitHostPort(process.env[arg!] ?? "");
  let reply = "";
  await new Promise<void>((resolve, reject) => {
    Bun.connect({
      hostname: host,
      port,
      allowHalfOpen: true,
      socket: {
        open: (s) => void (s.write("ping"), s.shutdown()),
        data: (_s, d) => void (reply += d.toString()),
        close: () => resolve(),
        connectError: (_s, err) => reject(err),
      },
    }).catch(reject);
  });
  console.log(reply);
  process.exit(0);
}
// The remaining modes stay up until a signal ends them.
setInterval(() => undefined, 60_000);
