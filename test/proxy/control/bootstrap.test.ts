/**
 * bootstrap(): each try has a deadline and a failed try is retried, said in the log; the
 * identity taken is the one the certificate proves, not the answer's claim, and nothing of a
 * refused answer is written.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { bundlePem, createIntermediate, createRoot, issueLeaf, type SigningCa } from "../../../src/ca/authority.ts";
import type { Logger } from "../../../src/core/log.ts";
import { bootstrap } from "../../../src/proxy/control/bootstrap.ts";
import { certToPem, exportPrivateKeyPem, generateKeyPair, x509 } from "../../../src/pki/x509.ts";
import { tempDir } from "../../helpers/cli.ts";

const TD = "mesh.local";
const ORDERS = `spiffe://${TD}/ns/default/sa/orders`;
const tmp = tempDir("mesh-bootstrap-");
let root: SigningCa, intermediate: SigningCa;
let server: ReturnType<typeof Bun.serve>;
/** How the bootstrap port answers a CSR's public key; undefined: never. */
let answer: ((key: CryptoKey) => Promise<Response>) | undefined;

async function leafFor(service: string, publicKey: CryptoKey): Promise<string> {
  const leaf = await issueLeaf(intermediate, { trustDomain: TD, namespace: service === "control-plane" ? "mesh-system" : "default", service, dnsNames: [], ttlMs: 3600_000, publicKey });
  return certToPem(leaf.cert) + certToPem(intermediate.cert);
}

function request(log: Logger) {
  return { url: `https://127.0.0.1:${server.port}`, token: "t", bundlePem: bundlePem([root.cert]), trustDomain: TD, namespace: "default", service: "orders", log, attemptMs: 300 };
}

function capture(): { log: Logger; warnings: Record<string, unknown>[] } {
  const warnings: Record<string, unknown>[] = [];
  return { log: { warn: (o: Record<string, unknown>, msg: string) => void warnings.push({ ...o, msg }) } as unknown as Logger, warnings };
}

beforeAll(async () => {
  root = await createRoot(TD);
  intermediate = await createIntermediate(root, TD);
  const keys = await generateKeyPair();
  const tls = { cert: await leafFor("control-plane", keys.publicKey), key: await exportPrivateKeyPem(keys.privateKey) };
  server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls,
    async fetch(req) {
      const { csr } = (await req.json()) as { csr: string };
      const key = await new x509.Pkcs10CertificateRequest(csr.trim()).publicKey.export({ name: "ECDSA", namedCurve: "P-256" }, ["verify"]);
      return answer ? answer(key) : new Promise<Response>(() => {});
    },
  });
});

afterAll(() => {
  server.stop(true);
  tmp.cleanup();
});

test("a bootstrap port that never answers: every try ends at its deadline, each retry is logged with its cause, and the last error names the port", async () => {
  answer = undefined;
  const { log, warnings } = capture();
  const certsDir = join(tmp.path, "silent");
  await expect(bootstrap({ ...request(log), certsDir })).rejects.toThrow(`cannot reach the control plane's bootstrap port https://127.0.0.1:${server.port} (5 tries): no answer within 0.3 s`);
  expect(warnings.map((w) => [w.msg, w.attempt, w.err])).toEqual([1, 2, 3, 4].map((n) => ["bootstrap request failed; retrying", n, "no answer within 0.3 s"]));
  expect(existsSync(certsDir)).toBe(false);
}, 20_000);

test("an answer claiming orders with admin's certificate is refused, naming both, and nothing is written", async () => {
  answer = async (key) => Response.json({ spiffeId: ORDERS, chain: await leafFor("admin", key), bundle: bundlePem([root.cert]) });
  const certsDir = join(tmp.path, "admin");
  await expect(bootstrap({ ...request(capture().log), certsDir })).rejects.toThrow(
    `the certificate is for spiffe://${TD}/ns/default/sa/admin, and this sidecar is ${ORDERS}; not taken`,
  );
  expect(existsSync(certsDir)).toBe(false);
});

test("a good answer is taken and saved, whatever its spiffeId field says", async () => {
  answer = async (key) => Response.json({ spiffeId: "whatever", chain: await leafFor("orders", key), bundle: bundlePem([root.cert]) });
  const certsDir = join(tmp.path, "good");
  const certs = await bootstrap({ ...request(capture().log), certsDir });
  expect(certs.spiffeId).toBe(ORDERS);
  expect(existsSync(join(certsDir, "chain.pem"))).toBe(true);
});
