/** An echo service as its own process (for network namespaces): prints its port, answers with the caller the proxy proved. */
export {};
const name = process.argv[2] ?? "echo";
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch: (req) => Response.json({ service: name, caller: req.headers.get("x-mesh-client-id"), host: process.env.HOSTNAME ?? "" }),
});
console.log(JSON.stringify({ ready: true, port: server.port }));
