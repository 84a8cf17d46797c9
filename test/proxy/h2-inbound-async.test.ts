/**
 * HTTP/2 requests admitted after an asynchronous step on the inbound (an end-user token
 * verified for the first time): the request's body and end must survive the wait. Bun's
 * server stream flows with no listener, so a body that is empty (END_STREAM on an empty
 * DATA frame, as node's client sends a POST ended with no data) ends before the relay
 * listens, unless the stream is paused meanwhile.
 */
import { beforeAll, afterAll, expect, test } from "bun:test";
import http2 from "node:http2";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { h2Service, type H2Service } from "../helpers/h2-service.ts";
import { testIssuer, type TestIssuer } from "../helpers/policies.ts";

const fx = fixtureFor("orders", "api");
let api: H2Service;
let issuer: TestIssuer;
let caller: Awaited<ReturnType<typeof fx.proxy>>;

beforeAll(async () => {
  api = await h2Service("api");
  issuer = await testIssuer("https://id.example");
  const own = fx.config("api-own", {}, issuer.requestAuthentication("api"));
  const sidecar = await fx.proxy("api", `http://127.0.0.1:${api.port}`, own);
  caller = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { api: [sidecar.ports.inbound] }));
});
afterAll(() => api?.stop());

test("POSTs with a token never seen before, with an empty body and with one, reach the service whole", async () => {
  const session = http2.connect(`http://127.0.0.1:${caller.ports.outbound}`);
  session.on("error", () => {});
  const post = (token: string, body?: string) =>
    new Promise<number>((resolve) => {
      const req = session.request({ ":method": "POST", ":path": "/items", ":authority": "api", authorization: `Bearer ${token}` });
      req.on("response", (h) => resolve(Number(h[":status"])));
      req.on("error", () => resolve(0));
      req.setTimeout(3000, () => resolve(-1));
      req.resume();
      req.end(body);
    });
  try {
    expect(await post(await issuer.token("alice"))).toBe(200);
    expect(await post(await issuer.token("bob"), "a body")).toBe(200);
  } finally {
    session.close();
  }
  expect(api.seen.map((s) => [s.method, s.body])).toEqual([
    ["POST", ""],
    ["POST", "a body"],
  ]);
});
