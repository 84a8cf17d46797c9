/**
 * The service behind every topology, in its own process so its CPU never competes
 * with the runner's event loop: a Bun.serve answering every request with 100 bytes.
 */
const BODY = "x".repeat(99) + "\n";

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT ?? 0),
  fetch: () => new Response(BODY, { headers: { "content-type": "text/plain" } }),
});
console.log(JSON.stringify({ ready: true, port: server.port }));

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    void server.stop(true);
    process.exit(0);
  });
}
