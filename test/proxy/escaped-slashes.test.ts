/**
 * `%2F` and `%5C` in inbound paths: refused by default (a service that decodes them into
 * separators would read a path other than the one rules matched), or, with
 * `--escaped-slashes keep` / ProxyConfig `escapedSlashes: keep`, carried to the service
 * as data, as GitLab-style APIs need, with rules matching them as data too.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { fixtureFor, type EchoService } from "../helpers/mesh-fixture.ts";
import { denyPaths } from "../helpers/observability.ts";
import { rawExchange } from "../helpers/raw-http.ts";

const fx = fixtureFor("orders", "payments", "ledger");
const DENY_ADMIN = denyPaths("payments", ["/admin/*"]);

let payments: EchoService;
let ports: { outbound: number; keepingAdmin: number };

beforeAll(async () => {
  payments = fx.echo("payments");
  const strict = await fx.proxy("payments", payments.url, fx.config("payments-strict", {}, DENY_ADMIN));
  const keeping = await fx.proxy("payments", payments.url, fx.config("payments-keep", {}, DENY_ADMIN), ["--escaped-slashes", "keep"]);
  const ledgerFile = fx.config("ledger", {}, `---\napiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: { name: ledger }\nspec:\n  upstream: ${payments.url}\n  escapedSlashes: keep\n`);
  const ledger = await fx.proxy("ledger", payments.url, ledgerFile);
  // A second name for payments, reaching the sidecar that keeps escaped slashes (its certificate is payments').
  const alias = `---\napiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: { name: payments-keep }\nspec:\n  identity: payments\n  ports: [{ name: http, port: 80 }]\n  endpoints: [{ address: 127.0.0.1, port: ${keeping.ports.inbound} }]\n`;
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [strict.ports.inbound], ledger: [ledger.ports.inbound] }, alias));
  ports = { outbound: orders.ports.outbound, keepingAdmin: keeping.ports.admin };
});

async function get(host: string, target: string): Promise<{ status: number; body: string }> {
  const r = await rawExchange(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`, { port: ports.outbound });
  return { status: r.statuses[0] ?? 0, body: r.text.split("\r\n\r\n")[1] ?? "" };
}

describe("escaped slashes", () => {
  test("by default a path with %2F or %5C is refused with 400 and never reaches the service", async () => {
    const hits = payments.hits;
    for (const target of ["/projects/group%2Fproj", "/a%5Cb"]) {
      const r = await get("payments", target);
      expect([target, r.status]).toEqual([target, 400]);
      expect(r.body).toContain("escaped slash or backslash");
    }
    expect(payments.hits).toBe(hits);
  });

  test("kept: the service receives %2F as sent (upper-cased), with the rest of the path normalized", async () => {
    const r = await get("payments-keep", "/projects/group%2fproj/./issues");
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).path).toBe("/projects/group%2Fproj/issues");
    const viaFile = await get("ledger", "/projects/group%2Fproj");
    expect(viaFile.status).toBe(200);
    expect(JSON.parse(viaFile.body).path).toBe("/projects/group%2Fproj");
  });

  test("kept: rules match %2F as data, so a deny on /admin/* matches /admin/keys and not /admin%2Fkeys", async () => {
    expect((await get("payments-keep", "/admin/keys")).status).toBe(403);
    const data = await get("payments-keep", "/admin%2Fkeys");
    expect(data.status).toBe(200);
    expect(JSON.parse(data.body).path).toBe("/admin%2Fkeys");
    // Other refusals are unchanged.
    expect((await get("payments-keep", "/a;b")).status).toBe(400);
  });

  test("/config_dump shows the setting", async () => {
    const dump = (await (await fetch(`http://127.0.0.1:${ports.keepingAdmin}/config_dump`)).json()) as { escapedSlashes: string };
    expect(dump.escapedSlashes).toBe("keep");
  });

  test("a bad value is refused naming the flag or the field", async () => {
    const base = ["proxy", "--service", "orders", "--upstream", "http://127.0.0.1:8080"];
    const flag = await mesh(...base, "--escaped-slashes", "decode");
    expect(flag.code).toBe(64);
    expect(flag.err).toContain('--escaped-slashes: expected refuse or keep, got "decode"');
    const file = join(fx.tmp.path, "bad-proxy.yaml");
    writeFileSync(file, "apiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: { name: orders }\nspec:\n  upstream: http://127.0.0.1:8080\n  escapedSlashes: decode\n");
    const cfg = await mesh("proxy", "--config", file);
    expect(cfg.code).not.toBe(0);
    expect(cfg.err).toContain("spec.escapedSlashes");
  });
});
