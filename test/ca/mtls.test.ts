/** A real mutual-TLS exchange with certificates issued by `mesh ca`. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";

const tmp = tempDir();
afterAll(tmp.cleanup);
const read = (...p: string[]) => readFileSync(join(tmp.path, ...p), "utf8");
let server: ReturnType<typeof Bun.serve>;

beforeAll(async () => {
  for (const [dir, td] of [["ca", "mesh.local"], ["other", "mesh.local"]] as const) {
    expect((await mesh("ca", "init", "--trust-domain", td, "--out", join(tmp.path, dir))).code).toBe(0);
  }
  for (const [svc, dir] of [["server", "ca"], ["client", "ca"], ["intruder", "other"]] as const)
    expect((await mesh("ca", "issue", "--service", svc, "--ca-dir", join(tmp.path, dir), "--out", join(tmp.path, svc))).code).toBe(0);
  server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: {
      cert: read("server", "chain.pem"),
      key: read("server", "key.pem"),
      ca: read("server", "bundle.pem"),
      requestCert: true,
      rejectUnauthorized: true,
    },
    fetch: () => new Response("hello over mTLS"),
  });
});
afterAll(() => server?.stop(true));

function call(client: string | undefined) {
  return fetch(`https://127.0.0.1:${server.port}/`, {
    tls: {
      ca: read("client" === client || !client ? "client" : client, "bundle.pem"),
      ...(client ? { cert: read(client, "chain.pem"), key: read(client, "key.pem") } : {}),
      checkServerIdentity: () => undefined, // identity is the SPIFFE ID, checked by the proxy; here only the chain matters
    },
  });
}

test("a client presenting an issued certificate is accepted", async () => {
  const res = await call("client");
  expect(res.status).toBe(200);
  expect(await res.text()).toBe("hello over mTLS");
});

test("a client with a certificate from another CA is refused", async () => {
  await expect(call("intruder")).rejects.toThrow();
});

test("a client with no certificate is refused", async () => {
  await expect(call(undefined)).rejects.toThrow();
});
