/**
 * gRPC with sidecars that follow a control plane: the callee's sidecar registers its
 * endpoint, the caller's learns it from its config, and a grpc-js call rides the HTTP/2
 * path with the callee's identity checked and the caller's handed on; a config pushed
 * later (an AuthorizationPolicy) applies to the next call.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { tempDir } from "../helpers/cli.ts";
import { cpSidecar, eventually, serviceManifest, startControlPlane, type Sidecar, type TestControlPlane } from "../helpers/control-plane.ts";
import { echoService, type EchoService } from "../helpers/mesh-fixture.ts";
import { greeterClient, greeterService, grpc, unary, type GreeterClient, type GreeterService, type Greeting } from "../helpers/grpc.ts";
import { stopAll } from "../helpers/procs.ts";
import { endpointsSeenBy } from "../helpers/traffic.ts";

const tmp = tempDir("mesh-cp-grpc-");
let cp: TestControlPlane;
let greeter: GreeterService;
let orders: Sidecar;
let client: GreeterClient;
const echoes: EchoService[] = [];

beforeAll(async () => {
  cp = await startControlPlane(tmp.path);
  await cp.apply(serviceManifest("orders"), serviceManifest("greeter"));
  greeter = await greeterService();
  await cpSidecar(cp, tmp.path, "greeter", "1", `http://127.0.0.1:${greeter.port}`);
  const echo = echoService("orders");
  echoes.push(echo);
  orders = await cpSidecar(cp, tmp.path, "orders", "1", echo.url, ["--calls", "greeter"]);
  expect(await eventually(async () => (await endpointsSeenBy(orders.ports.admin, "greeter")).length === 1)).toBe(true);
  client = greeterClient(orders.ports.outbound, "greeter");
});

afterAll(async () => {
  client?.close();
  await stopAll();
  await greeter?.stop();
  for (const e of echoes) e.server.stop(true);
  tmp.cleanup();
});

test("a call reaches the registered instance, which sees the caller's SPIFFE ID", async () => {
  const r = await unary<Greeting>(client, "hello", { name: "cp" });
  expect(r.error).toBeUndefined();
  expect(r.value).toMatchObject({ message: "hello cp", caller: "spiffe://mesh.local/ns/default/sa/orders" });
});

test("an AuthorizationPolicy pushed later refuses the next call with PERMISSION_DENIED", async () => {
  await cp.apply({
    apiVersion: "mesh.dev/v1alpha1",
    kind: "AuthorizationPolicy",
    metadata: { name: "greeter-no-hello", namespace: "default" },
    spec: { service: "greeter", action: "deny", rules: [{ to: { paths: ["/mesh.test.Greeter/Hello"] } }] },
  });
  expect(await eventually(async () => (await unary(client, "hello", { name: "x" })).error?.code === grpc.status.PERMISSION_DENIED, 10_000)).toBe(true);
  const other = client.count({ to: 2 });
  const got: number[] = [];
  other.on("data", (m: { n: number }) => got.push(m.n));
  await new Promise((resolve) => other.on("status", resolve));
  expect(got).toEqual([1, 2]);
});
