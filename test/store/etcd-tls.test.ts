/**
 * The etcd store over TLS with client certificates, against a real etcd that asks every
 * client for one (--client-cert-auth), as a production cluster does: the whole
 * conformance suite (watches included), then each way a client that should not get in
 * is kept out.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { StoreError } from "../../src/store/errors.ts";
import { EtcdStore } from "../../src/store/etcd.ts";
import type { EtcdTls } from "../../src/store/etcd-client.ts";
import { etcdInstalled, startEtcdCluster, type EtcdCluster } from "../helpers/etcd.ts";
import { storeConformance } from "./conformance.ts";


if (etcdInstalled("the etcd store tests")) {
  let cluster: EtcdCluster;
  let tls: EtcdTls;
  beforeAll(async () => {
    cluster = await startEtcdCluster(1, { tls: true });
    const files = cluster.clientTls!;
    tls = { ca: readFileSync(files.ca, "utf8"), cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8") };
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  describe("etcd store over TLS: conformance", () => {
    storeConformance(() => ({ open: async () => new EtcdStore({ endpoints: cluster.endpoints, tls }), shortTtlMs: 1_000, expirySlackMs: 700 }));
  });

  describe("etcd store over TLS: who is kept out", () => {
    /** What a store opened with `opts` gets for one read: the value, or its error. */
    async function read(opts: { endpoints?: string[]; tls?: EtcdTls }): Promise<string> {
      const store = new EtcdStore({ endpoints: opts.endpoints ?? cluster.endpoints, tls: opts.tls, retryForMs: 1_000, requestTimeoutMs: 1_000 });
      try {
        await store.put("tls-probe", "here");
        return `read ${(await store.get("tls-probe"))?.value}`;
      } catch (err) {
        return err instanceof StoreError ? `${err.code}: ${err.message}` : String(err);
      } finally {
        await store.close();
      }
    }

    test("the client with its certificate reads and writes", async () => {
      expect(await read({ tls })).toBe("read here");
    });

    test("without a client certificate: refused, and the error names the member", async () => {
      const answer = await read({ tls: { ca: tls.ca } });
      expect(answer).toStartWith("unavailable: ");
      expect(answer).toContain(cluster.endpoints[0]!);
    });

    test("a member whose certificate no trusted CA signed is not spoken to", async () => {
      const answer = await read({ tls: { cert: tls.cert, key: tls.key } });
      expect(answer).toStartWith("unavailable: ");
      expect(answer).toContain(cluster.endpoints[0]!);
    });

    test("plain HTTP to the TLS port gets nothing", async () => {
      const answer = await read({ endpoints: [cluster.endpoints[0]!.replace("https:", "http:")], tls });
      expect(answer).toStartWith("unavailable: ");
    });
  });
}
