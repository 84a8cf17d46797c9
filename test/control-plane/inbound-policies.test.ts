/**
 * AuthorizationPolicy, RateLimitPolicy and RequestAuthentication through the control
 * plane: `mesh apply` validates them (their Service must exist, paths be ones a request
 * could have, one rate limit per service, public keys only), each sidecar is sent only its own service's, a change is enforced
 * without a restart, a bad one leaves the last good set in force, and a Service a policy
 * protects cannot be deleted under it.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";
import { cpSidecar, eventually, serviceManifest, startControlPlane, type Sidecar, type TestControlPlane } from "../helpers/control-plane.ts";
import { echoService, type EchoService } from "../helpers/mesh-fixture.ts";
import { startMesh, stopAll } from "../helpers/procs.ts";
import { rawExchange } from "../helpers/raw-http.ts";
import { endpointsSeenBy } from "../helpers/traffic.ts";

const tmp = tempDir("mesh-cp-authz-");
const echoes: EchoService[] = [];
let cp: TestControlPlane;
let admin: string[];
let payments: Sidecar;
let orders: Sidecar;
let web: Sidecar;

async function sidecar(service: string): Promise<Sidecar> {
  const echo = echoService(service);
  echoes.push(echo);
  return cpSidecar(cp, tmp.path, service, "1", echo.url);
}

beforeAll(async () => {
  cp = await startControlPlane(tmp.path);
  await cp.apply(serviceManifest("orders"), serviceManifest("web"), serviceManifest("payments"));
  const tokenFile = join(tmp.path, "admin.token");
  writeFileSync(tokenFile, cp.adminToken);
  admin = ["--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", tokenFile];
  [payments, orders, web] = await Promise.all([sidecar("payments"), sidecar("orders"), sidecar("web")]);
  for (const caller of [orders, web]) expect(await eventually(async () => (await endpointsSeenBy(caller.ports.admin, "payments")).length === 1)).toBe(true);
});
afterAll(async () => {
  await stopAll();
  for (const e of echoes) e.server.stop(true);
  tmp.cleanup();
});

const status = async (caller: Sidecar, path = "/v1/charges") => {
  const res = await fetch(`http://127.0.0.1:${caller.ports.outbound}${path}`, { headers: { host: "payments" } });
  await res.arrayBuffer();
  return res.status;
};

const file = (name: string, text: string) => {
  const path = join(tmp.path, name);
  writeFileSync(path, text);
  return path;
};

const onlyOrders = (paths = "[/v1/*]") => `apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: payments-callers, namespace: default}
spec:
  service: payments
  rules:
    - from: {services: [orders]}
      to: {paths: ${paths}}
`;

const dumpOf = async (sidecar: Sidecar) =>
  (await (await fetch(`http://127.0.0.1:${sidecar.ports.admin}/config_dump`)).json()) as { authorization: { policy: string }[]; authentication: { policy: string }[]; rateLimit?: { policy: string } };
const authorizationOf = async (sidecar: Sidecar) => (await dumpOf(sidecar)).authorization.map((p) => p.policy);

test("a policy applied is enforced by the service's sidecars at once, and sent to no other", async () => {
  expect(await status(web)).toBe(200);
  const applied = await mesh("apply", "-f", file("only-orders.yaml", onlyOrders()), ...admin);
  expect(applied.out).toBe("AuthorizationPolicy/default/payments-callers created");
  expect(await eventually(async () => (await status(web)) === 403)).toBe(true);
  expect(await status(orders)).toBe(200);
  expect(await status(orders, "/admin")).toBe(403);
  expect(await authorizationOf(payments)).toEqual(["default/payments-callers"]);
  expect(await authorizationOf(orders)).toEqual([]);
  expect(await authorizationOf(web)).toEqual([]);
});

test("a policy no request could match, or for a Service that does not exist, is refused at apply; the last good one stays", async () => {
  const bad = file("bad.yaml", onlyOrders("[/v1//charges]"));
  const r1 = await mesh("apply", "-f", bad, ...admin);
  expect(r1.code).toBe(65);
  expect(r1.err).toContain(`${bad}#0 spec.rules[0].to.paths[0]: "/v1//charges": not in normal form`);
  const dangling = file("dangling.yaml", onlyOrders().replace("service: payments", "service: paymnts"));
  const r2 = await mesh("apply", "-f", dangling, ...admin);
  expect(r2.code).toBe(65);
  expect(r2.err).toContain(`${dangling}#0 spec.service: no Service "paymnts" in namespace "default"`);
  expect(await status(web)).toBe(403);
  expect(await status(orders)).toBe(200);
});

test("the protected Service cannot be deleted under its policy", async () => {
  const r = await mesh("delete", "service", "payments", ...admin);
  expect(r.code).not.toBe(0);
  expect(r.err).toContain('used by AuthorizationPolicy "payments-callers"');
});

test("a namespace-wide deny ('*') reaches every service's sidecars; deleting policies lets callers back in", async () => {
  const denyAll = `apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: freeze, namespace: default}
spec:
  service: "*"
  action: deny
  rules: [{}]
`;
  await mesh("apply", "-f", file("freeze.yaml", denyAll), ...admin);
  expect(await eventually(async () => (await status(orders)) === 403)).toBe(true);
  expect((await authorizationOf(orders)).sort()).toEqual(["default/freeze"]);
  expect((await authorizationOf(payments)).sort()).toEqual(["default/freeze", "default/payments-callers"]);

  expect((await mesh("delete", "authorizationpolicy", "freeze", ...admin)).code).toBe(0);
  expect(await eventually(async () => (await status(orders)) === 200)).toBe(true);
  expect(await status(web)).toBe(403);
  expect((await mesh("delete", "authorizationpolicy", "payments-callers", ...admin)).code).toBe(0);
  expect(await eventually(async () => (await status(web)) === 200)).toBe(true);
  expect(await authorizationOf(payments)).toEqual([]);
});

test("a rate limit applied is enforced by the service's sidecars alone; a second one for the service is refused", async () => {
  const limit = (name: string) => `apiVersion: mesh.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: ${name}, namespace: default}
spec:
  service: payments
  perCaller: {requestsPerSecond: 0.1, burst: 2}
`;
  expect((await mesh("apply", "-f", file("limit.yaml", limit("payments-limit")), ...admin)).out).toBe("RateLimitPolicy/default/payments-limit created");
  expect(await eventually(async () => (await dumpOf(payments)).rateLimit?.policy === "default/payments-limit")).toBe(true);
  expect((await dumpOf(orders)).rateLimit).toBeUndefined();
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push(await status(orders));
  expect(statuses).toEqual([200, 200, 429, 429]);
  expect(await status(web)).toBe(200);

  const second = file("second.yaml", limit("another"));
  const r = await mesh("apply", "-f", second, ...admin);
  expect(r.code).toBe(65);
  expect(r.err).toContain(`${second}#0 spec.service: Service "default/payments" already has RateLimitPolicy "payments-limit"; a service takes one`);
  // Re-applying the same one is not a second.
  expect((await mesh("apply", "-f", file("limit.yaml", limit("payments-limit")), ...admin)).out).toBe("RateLimitPolicy/default/payments-limit unchanged");
});

test("a RequestAuthentication applied is enforced by the service's sidecars alone; private key material is refused at apply", async () => {
  expect((await mesh("delete", "ratelimitpolicy", "payments-limit", ...admin)).code).toBe(0);
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: "k1" };
  const users = (key: Record<string, unknown>) => `apiVersion: mesh.dev/v1alpha1
kind: RequestAuthentication
metadata: {name: end-users, namespace: default}
spec:
  service: payments
  jwtRules:
    - issuer: https://id.example.com
      jwks: {keys: [${JSON.stringify(key)}]}
`;
  expect((await mesh("apply", "-f", file("users.yaml", users(jwk)), ...admin)).out).toBe("RequestAuthentication/default/end-users created");
  expect(await eventually(async () => (await dumpOf(payments)).authentication.length === 1 && (await dumpOf(payments)).rateLimit === undefined)).toBe(true);
  expect((await dumpOf(orders)).authentication).toEqual([]);
  const withToken = async (caller: Sidecar, token: string) => {
    const res = await fetch(`http://127.0.0.1:${caller.ports.outbound}/v1/charges`, { headers: { host: "payments", authorization: `Bearer ${token}` } });
    await res.arrayBuffer();
    return res.status;
  };
  const valid = await new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer("https://id.example.com").setSubject("alice").setExpirationTime("5m").sign(privateKey);
  expect(await withToken(orders, valid)).toBe(200);
  expect(await withToken(orders, valid.slice(0, -4) + "AAAA")).toBe(401);

  const leaked = file("leaked.yaml", users({ ...(await exportJWK(privateKey)), kid: "k1" }));
  const r = await mesh("apply", "-f", leaked, ...admin);
  expect(r.code).toBe(65);
  expect(r.err).toContain(`${leaked}#0 spec.jwtRules[0].jwks.keys[0]: holds private key material (d)`);
  expect((await mesh("delete", "service", "payments", ...admin)).err).toContain('used by RequestAuthentication "end-users"');
  expect((await mesh("delete", "requestauthentication", "end-users", ...admin)).code).toBe(0);
  expect(await eventually(async () => (await dumpOf(payments)).authentication.length === 0)).toBe(true);
  expect(await withToken(orders, "not.a.jwt")).toBe(200);
});

test("restarted while the control plane is down, a sidecar enforces the config it last applied: not ready, but no caller let in unchecked", async () => {
  await mesh("apply", "-f", file("only-orders-again.yaml", onlyOrders()), ...admin);
  const echo = echoService("payments-cached");
  echoes.push(echo);
  const first = await cpSidecar(cp, tmp.path, "payments", "cached", echo.url);
  expect(await eventually(async () => (await authorizationOf(first)).includes("default/payments-callers"))).toBe(true);
  first.proc.kill("SIGTERM");
  expect(await first.proc.exited).toBe(0);
  cp.proc.kill("SIGKILL");
  await cp.proc.exited;

  const certs = join(tmp.path, "certs", "payments-cached");
  const again = await startMesh([
    "proxy", "--service", "payments", "--upstream", echo.url, "--certs-dir", certs, "--ca", cp.bundle,
    "--control-plane", `https://127.0.0.1:${cp.ports.api}`, "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
  ]);
  const ports = again.ready as { inbound: number; admin: number };
  const ready = await fetch(`http://127.0.0.1:${ports.admin}/ready`);
  expect([ready.status, await ready.text()]).toEqual([503, "not ready: waiting for the first config from the control plane\n"]);
  const as = (caller: string) => {
    const dir = join(tmp.path, "certs", `${caller}-1`);
    const tls = { cert: readFileSync(join(dir, "chain.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8"), ca: readFileSync(join(dir, "bundle.pem"), "utf8") };
    return rawExchange("GET /v1/charges HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n", { port: ports.inbound, tls });
  };
  expect((await as("orders")).statuses).toEqual([200]);
  expect((await as("web")).statuses).toEqual([403]);
});
