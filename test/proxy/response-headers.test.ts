/**
 * An HTTPRoute rule's responseHeaders, through a real sidecar pair: the caller's sidecar
 * changes the headers of the responses the service sends to the calls the rule takes,
 * over HTTP/1.1 (a whole response, which otherwise goes out as received, and one that
 * streams) and HTTP/2. Removal takes every spelling; calls no rule takes, and the
 * proxy's own answers, are left as they are; the proxy's own headers cannot be changed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2, { type ServerHttp2Stream } from "node:http2";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { rawExchange } from "../helpers/raw-http.ts";
import { manifestIssues } from "../helpers/policies.ts";

const fx = fixtureFor("orders", "api");
let caller: Awaited<ReturnType<typeof fx.proxy>>;
let h2Caller: Awaited<ReturnType<typeof fx.proxy>>;
let h2: http2.Http2Server;
let outsideCaller: Awaited<ReturnType<typeof fx.proxy>>;
let outsideH2Caller: Awaited<ReturnType<typeof fx.proxy>>;

const ROUTE = `---
apiVersion: mesh.dev/v1alpha1
kind: HTTPRoute
metadata: { name: api-responses }
spec:
  service: api
  rules:
    - matches: [{ path: { prefix: /edit } }]
      backends: [{ service: api }]
      responseHeaders:
        set: [{ name: cache-control, value: max-age=60 }]
        add: [{ name: x-trace, value: routed }]
        remove: [x-internal, server]
    - matches: [{ path: { prefix: /refused } }]
      backends: [{ service: api }]
      fault: { abort: { status: 503 } }
      responseHeaders: { add: [{ name: x-trace, value: routed }] }
`;

/** What the service answers with, every time, as raw lines: two copies of cache-control, two spellings of x-internal. */
const SERVICE_LINES = ["Cache-Control: no-store", "Cache-Control: private", "X-Trace: service", "X-Internal: secret", "x_internal: secret too", "Server: tiny/1.0", "X-Kept: kept"];
/** A service posing as a sidecar's answer, so a route's edits would be skipped, on paths with "spoof". */
const SPOOF_LINES = ["X-Mesh-Error: fault", "x-mesh-overflow: requests"];

/**
 * An HTTP/1.1 service on a raw socket, so its header lines go out exactly as written (a
 * runtime's server would join the two cache-control lines): a GET of a path ending in
 * /stream gets a chunked body in three writes, 50 ms apart; any other, a whole one.
 */
function rawService(): Bun.TCPSocketListener<{ pending: string }> {
  return Bun.listen<{ pending: string }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open: (s) => void (s.data = { pending: "" }),
      async data(s, bytes) {
        s.data.pending += bytes.toString();
        for (let end = s.data.pending.indexOf("\r\n\r\n"); end >= 0; end = s.data.pending.indexOf("\r\n\r\n")) {
          const path = s.data.pending.split(" ")[1]!;
          s.data.pending = s.data.pending.slice(end + 4);
          const head = ["HTTP/1.1 200 OK", ...SERVICE_LINES, ...(path.includes("spoof") ? SPOOF_LINES : [])];
          if (!path.endsWith("/stream")) {
            s.write([...head, "Content-Length: 5", "", "whole"].join("\r\n"));
            continue;
          }
          s.write([...head, "Transfer-Encoding: chunked", "", ""].join("\r\n"));
          for (let n = 1; n <= 3; n++) {
            await Bun.sleep(50);
            s.write(`6\r\npart${n};\r\n`);
          }
          s.write("0\r\n\r\n");
        }
      },
    },
  });
}
let service: Bun.TCPSocketListener<{ pending: string }>;

beforeAll(async () => {
  service = rawService();
  const api = await fx.proxy("api", `http://127.0.0.1:${service.port}`);
  caller = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { api: [api.ports.inbound] }, ROUTE));

  h2 = http2.createServer();
  h2.on("stream", (stream: ServerHttp2Stream, headers) => {
    const spoof = String(headers[":path"]).includes("spoof") ? { "x-mesh-error": "fault", "x-mesh-overflow": "requests" } : {};
    stream.respond({ ":status": 200, "cache-control": "no-store, private", "x-trace": "service", "x-internal": "secret", server: "tiny/1.0", "x-kept": "kept", ...spoof });
    stream.end("h2 body");
  });
  const h2Port = await new Promise<number>((resolve) => h2.listen(0, "127.0.0.1", () => resolve((h2.address() as { port: number }).port)));
  const apiH2 = await fx.proxy("api", `http://127.0.0.1:${h2Port}`);
  h2Caller = await fx.proxy("orders", fx.echo("orders-h2").url, fx.config("orders-h2", { api: [apiH2.ports.inbound] }, ROUTE));
  // The same services outside the mesh: the caller's sidecar reaches them directly, without mTLS.
  const outside = (port: number, protocol: string) =>
    `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec:\n  ports: [{ name: http, port: 80, protocol: ${protocol} }]\n  endpoints: [{ address: 127.0.0.1, port: ${port} }]\n  mtls: false\n`;
  outsideCaller = await fx.proxy("orders", fx.echo("orders-outside").url, fx.documents("orders-outside", [outside(service.port, "http"), ROUTE.replace(/^---\n/, "")]));
  outsideH2Caller = await fx.proxy("orders", fx.echo("orders-outside-h2").url, fx.documents("orders-outside-h2", [outside(h2Port, "http2"), ROUTE.replace(/^---\n/, "")]));
});
afterAll(() => {
  h2?.close();
  service?.stop(true);
});

/** The response's header lines, lower-cased names, in order, and its body (chunked framing left in). */
async function rawGet(path: string, port = caller.ports.outbound): Promise<{ status: number; lines: [string, string][]; body: string }> {
  const res = await rawExchange(`GET ${path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`, { port });
  const [head, body] = [res.text.slice(0, res.text.indexOf("\r\n\r\n")), res.text.slice(res.text.indexOf("\r\n\r\n") + 4)];
  const lines = head
    .split("\r\n")
    .slice(1)
    .map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()] as [string, string]);
  return { status: res.statuses[0]!, lines, body };
}

const valuesOf = (lines: [string, string][], name: string) => lines.filter(([n]) => n === name).map(([, v]) => v);

describe("HTTP/1.1", () => {
  for (const [kind, path] of [["a whole response", "/edit/whole"], ["a streamed response", "/edit/stream"]] as const)
    test(`${kind} the rule takes: set replaces every copy, add keeps the service's, remove takes every spelling`, async () => {
      const res = await rawGet(path);
      expect(res.status).toBe(200);
      expect(valuesOf(res.lines, "cache-control")).toEqual(["max-age=60"]);
      expect(valuesOf(res.lines, "x-trace")).toEqual(["service", "routed"]);
      expect([...valuesOf(res.lines, "x-internal"), ...valuesOf(res.lines, "x_internal"), ...valuesOf(res.lines, "server")]).toEqual([]);
      expect(valuesOf(res.lines, "x-kept")).toEqual(["kept"]);
      if (path.endsWith("stream")) {
        expect(valuesOf(res.lines, "transfer-encoding")).toEqual(["chunked"]);
        expect(res.body.replace(/\r\n[0-9a-f]+\r\n|^[0-9a-f]+\r\n|\r\n/g, "")).toBe("part1;part2;part3;");
      } else expect(res.body).toBe("whole");
    });

  test("a response no rule takes leaves as it came", async () => {
    const res = await rawGet("/whole");
    expect(valuesOf(res.lines, "cache-control")).toEqual(["no-store", "private"]);
    expect(valuesOf(res.lines, "x-trace")).toEqual(["service"]);
    expect(valuesOf(res.lines, "x-internal")).toEqual(["secret"]);
    expect(valuesOf(res.lines, "x_internal")).toEqual(["secret too"]);
    expect(valuesOf(res.lines, "server")).toEqual(["tiny/1.0"]);
  });

  test("the proxy's own answer is not the service's response: left as it is", async () => {
    const res = await rawGet("/refused/x");
    expect(res.status).toBe(503);
    expect(valuesOf(res.lines, "x-mesh-error")).toEqual(["fault"]);
    expect(valuesOf(res.lines, "x-trace")).toEqual([]);
  });

  // Otherwise a service could pass for a sidecar's answer, and have the route's edits skipped.
  for (const [where, port] of [["in the mesh (its sidecar removes them)", () => caller.ports.outbound], ["outside the mesh (the caller's sidecar removes them)", () => outsideCaller.ports.outbound]] as const)
    test(`a service's own x-mesh-error and x-mesh-overflow, ${where}: removed, and the route's edits made`, async () => {
      for (const path of ["/edit/spoof", "/edit/spoof/stream", "/spoof"]) {
        const res = await rawGet(path, port());
        expect([path, res.status, valuesOf(res.lines, "x-mesh-error"), valuesOf(res.lines, "x-mesh-overflow")]).toEqual([path, 200, [], []]);
        expect([path, valuesOf(res.lines, "x-trace")]).toEqual([path, path.startsWith("/edit") ? ["service", "routed"] : ["service"]]);
      }
    });
});

describe("HTTP/2", () => {
  test("the same changes on a stream the rule takes, and none on one it does not", async () => {
    const session = http2.connect(`http://127.0.0.1:${h2Caller.ports.outbound}`);
    session.on("error", () => {});
    const headersOf = (path: string) =>
      new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const req = session.request({ ":path": path, ":authority": "api" });
        req.on("response", resolve);
        req.on("error", reject);
        req.resume();
        req.end();
      });
    try {
      const edited = await headersOf("/edit/x");
      expect([edited["cache-control"], edited["x-trace"], edited["x-internal"], edited.server, edited["x-kept"]]).toEqual(["max-age=60", "service, routed", undefined, undefined, "kept"]);
      const plain = await headersOf("/x");
      expect([plain["cache-control"], plain["x-trace"], plain["x-internal"], plain.server]).toEqual(["no-store, private", "service", "secret", "tiny/1.0"]);
    } finally {
      session.close();
    }
  });

  for (const [where, port] of [["in the mesh", () => h2Caller.ports.outbound], ["outside the mesh", () => outsideH2Caller.ports.outbound]] as const)
    test(`a service's own x-mesh-error and x-mesh-overflow, ${where}: removed, and the route's edits made`, async () => {
      const session = http2.connect(`http://127.0.0.1:${port()}`);
      session.on("error", () => {});
      try {
        const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
          const req = session.request({ ":path": "/edit/spoof", ":authority": "api" });
          req.on("response", resolve);
          req.on("error", reject);
          req.resume();
          req.end();
        });
        expect([Number(headers[":status"]), headers["x-mesh-error"], headers["x-mesh-overflow"], headers["x-trace"], headers["cache-control"]]).toEqual([200, undefined, undefined, "service, routed", "max-age=60"]);
      } finally {
        session.close();
      }
    });
});

describe("config", () => {
  const rule = (responseHeaders: unknown) => ({ service: "a", rules: [{ backends: [{ service: "a" }], responseHeaders }] });

  test("the proxy's own response headers cannot be changed; a header is named once", () => {
    expect(manifestIssues("HTTPRoute", rule({ remove: ["server", "date", "X_Powered_By"] }))).toEqual([]);
    expect(manifestIssues("HTTPRoute", rule({ set: [{ name: "Content-Length", value: "1" }], add: [{ name: "x-mesh-error", value: "no" }], remove: ["connection", "x_mesh_overflow"] }))).toEqual([
      'spec.rules[0].responseHeaders.set[0].name: "content-length" is the proxy\'s own to set or remove; a route cannot change it',
      'spec.rules[0].responseHeaders.add[0].name: "x-mesh-error" is the proxy\'s own to set or remove; a route cannot change it',
      'spec.rules[0].responseHeaders.remove[0]: "connection" is the proxy\'s own to set or remove; a route cannot change it',
      'spec.rules[0].responseHeaders.remove[1]: "x-mesh-overflow" is the proxy\'s own to set or remove; a route cannot change it',
    ]);
    expect(manifestIssues("HTTPRoute", rule({ set: [{ name: "x-a", value: "1" }], remove: ["x-a"] }))).toEqual(['spec.rules[0].responseHeaders.remove[0]: "x-a" is in set already: name a header once']);
    // A gRPC call's outcome, which the sidecars count and retry by, is the service's to give.
    expect(manifestIssues("HTTPRoute", rule({ set: [{ name: "grpc-status", value: "0" }], remove: ["grpc_message"] }))).toEqual([
      "spec.rules[0].responseHeaders.set[0].name: \"grpc-status\" is a gRPC call's outcome, the service's to give; a route cannot change it",
      "spec.rules[0].responseHeaders.remove[0]: \"grpc-message\" is a gRPC call's outcome, the service's to give; a route cannot change it",
    ]);
    // A request's own (traceparent, host) are a response's to change.
    expect(manifestIssues("HTTPRoute", rule({ set: [{ name: "traceparent", value: "x" }] }))).toEqual([]);
  });
});
