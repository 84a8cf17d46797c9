/**
 * AuthorizationPolicy `ports`, as real processes on loopback: db serves HTTP (its
 * --upstream) and two opaque TCP ports, and its policy lets orders reach one TCP port
 * only and web the HTTP port only. The ports named are the workload's: a tcp port's
 * targetPort, and the --upstream's port for HTTP.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { tcpEchoService, tcpExchange, type TcpService } from "../helpers/tcp.ts";

const fx = fixtureFor("orders", "web", "db");
let pg: TcpService;
let cache: TcpService;
let db: Awaited<ReturnType<typeof fx.proxy>>;
let orders: Awaited<ReturnType<typeof fx.proxy>>;
let web: Awaited<ReturnType<typeof fx.proxy>>;
/** Each caller's local listeners: [db:5432, db:6379]. */
let ordersTcp: number[];
let webTcp: number[];

const doc = (kind: string, name: string, spec: string) => `---\napiVersion: mesh.dev/v1alpha1\nkind: ${kind}\nmetadata:\n  name: ${name}\nspec:\n${spec}`;

function write(name: string, text: string): string {
  const path = join(fx.tmp.path, `${name}.yaml`);
  writeFileSync(path, text);
  return path;
}

beforeAll(async () => {
  pg = tcpEchoService();
  cache = tcpEchoService();
  const http = fx.echo("db-http");
  const httpPort = Number(new URL(http.url).port);
  const service = (endpoint?: number) =>
    doc(
      "Service",
      "db",
      `  ports:\n    - { name: http, port: 80 }\n    - { name: pg, port: 5432, protocol: tcp, targetPort: ${pg.port} }\n    - { name: cache, port: 6379, protocol: tcp, targetPort: ${cache.port} }\n` +
        (endpoint === undefined ? "" : `  endpoints: [{ address: 127.0.0.1, port: ${endpoint} }]\n`),
    );
  const policy = doc(
    "AuthorizationPolicy",
    "db-ports",
    `  service: db\n  rules:\n    - from: { services: [orders] }\n      to: { ports: [${pg.port}] }\n    - from: { services: [web] }\n      to: { ports: [${httpPort}] }\n`,
  );
  db = await fx.proxy("db", http.url, write("db", service() + policy));
  const upstreams = ["--tcp-upstream", "db:5432=127.0.0.1:0", "--tcp-upstream", "db:6379=127.0.0.1:0"];
  orders = await fx.proxy("orders", fx.echo("orders").url, write("orders", service(db.ports.inbound)), upstreams);
  web = await fx.proxy("web", fx.echo("web").url, write("web", service(db.ports.inbound)), upstreams);
  ordersTcp = (orders.ready as { tcp: number[] }).tcp;
  webTcp = (web.ready as { tcp: number[] }).tcp;
});
afterAll(() => {
  for (const s of [pg, cache]) s?.stop();
});

const get = (caller: typeof orders) => fetch("http://db/", { proxy: `http://127.0.0.1:${caller.ports.outbound}` } as RequestInit);

describe("ports", () => {
  test("orders reaches the port its rule names, and neither the other tcp port nor HTTP", async () => {
    expect((await tcpExchange(ordersTcp[0]!, "ok")).text).toBe("okbye 2");
    expect((await tcpExchange(ordersTcp[1]!, "secret")).text).toBe("");
    expect(cache.accepted).toBe(0);
    expect((await get(orders)).status).toBe(403);
    expect(await metricValue(db.ports.admin, "mesh_authorization_denied_total", { peer: "orders", policy: "no-allow-matched" })).toBe(2);
  });

  test("web reaches HTTP, the port of db's --upstream, and no tcp port", async () => {
    const r = await get(web);
    expect(r.status).toBe(200);
    await r.arrayBuffer();
    const accepted = pg.accepted;
    expect((await tcpExchange(webTcp[0]!, "secret")).text).toBe("");
    expect((await tcpExchange(webTcp[1]!, "secret")).text).toBe("");
    expect([pg.accepted - accepted, cache.accepted]).toEqual([0, 0]);
  });
});
