/**
 * An echo service as its own process (for network namespaces): answers HTTP with the
 * caller the proxy proved, and echoes raw TCP (tcp.ts); prints both ports.
 */
import { tcpEchoService } from "./tcp.ts";

const name = process.argv[2] ?? "echo";
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch: (req) => Response.json({ service: name, caller: req.headers.get("x-mesh-client-id"), host: process.env.HOSTNAME ?? "", asked: req.headers.get("host") }),
});
const tcp = tcpEchoService();
console.log(JSON.stringify({ ready: true, port: server.port, tcpPort: tcp.port }));
