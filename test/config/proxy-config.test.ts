import { describe, expect, test } from "bun:test";
import { doc, errorsOf, specOf } from "./helpers";

const proxy = (spec: string, metadata?: string) => doc("ProxyConfig", spec, metadata);
const UPSTREAM = "  upstream: http://127.0.0.1:8080";

describe("ProxyConfig", () => {
  test("minimal: only upstream; everything else defaulted, service and namespace from metadata", () => {
    expect(specOf(proxy(UPSTREAM, "  name: web\n  namespace: shop"))).toEqual({
      service: "web",
      namespace: "shop",
      upstream: "http://127.0.0.1:8080",
      inbound: { address: "0.0.0.0", port: 15006 },
      outbound: { address: "127.0.0.1", port: 15001 },
      admin: { address: "127.0.0.1", port: 15000 },
      trustDomain: "mesh.local",
      logLevel: "info",
      drainTimeout: 30_000,
      streamIdleTimeout: 300_000,
      outboundDrainDelay: 0,
      escapedSlashes: "refuse",
      transparent: false,
      unknownDestinations: "refuse",
    });
  });

  test("controlPlane: https URLs only, at least one; healthPath a path", () => {
    const bad = [UPSTREAM, "  healthPath: healthz", "  controlPlane:", "    urls: [http://10.0.0.1:15010, https://10.0.0.2:15010/x]", "    bootstrapUrl: nope", "    calls: []"].join("\n");
    expect(errorsOf(proxy(bad))).toEqual([
      "m.yaml#0 spec.controlPlane.urls[0]: expected an https:// URL (the control plane speaks only TLS), got \"http://10.0.0.1:15010\"",
      "m.yaml#0 spec.controlPlane.urls[1]: expected only scheme, host and port",
      "m.yaml#0 spec.controlPlane.bootstrapUrl: expected a URL like https://10.0.0.1:15010, got \"nope\"",
      "m.yaml#0 spec.controlPlane.calls: expected at least 1 item",
      "m.yaml#0 spec.healthPath: expected a path like /healthz",
    ]);
    expect(errorsOf(proxy(`${UPSTREAM}\n  controlPlane: {}`))).toEqual(["m.yaml#0 spec.controlPlane.urls: required"]);
  });

  test("tracing: an http(s) collector URL, sampling a percentage defaulting to 1", () => {
    expect(errorsOf(proxy(`${UPSTREAM}\n  tracing: {collector: "udp://x:1", sampling: 101}`))).toEqual([
      'm.yaml#0 spec.tracing.collector: expected an http:// or https:// URL, got "udp://x:1"',
      expect.stringMatching(/^m\.yaml#0 spec\.tracing\.sampling: /),
    ]);
    expect(errorsOf(proxy(`${UPSTREAM}\n  tracing: {}`))).toEqual(["m.yaml#0 spec.tracing.collector: required"]);
    expect(specOf(proxy(`${UPSTREAM}\n  tracing: {collector: "http://127.0.0.1:4318/v1/traces"}`)).tracing).toEqual({ collector: "http://127.0.0.1:4318/v1/traces", sampling: 1 });
  });

  test("an outbound drain delay longer than the drain timeout is refused at the field", () => {
    expect(errorsOf(proxy(`${UPSTREAM}\n  drainTimeout: 10s\n  outboundDrainDelay: 20s`))).toEqual(["m.yaml#0 spec.outboundDrainDelay: 20000 ms is longer than drainTimeout (10000 ms), which ends every drain"]);
  });

  test("explicit values win; a partial listener keeps its other default", () => {
    const spec = specOf(
      proxy(
        [
          "  service: api",
          "  namespace: prod",
          "  upstream: http://localhost:9000",
          "  inbound: {port: 16006}",
          "  outbound: {address: '::1', port: 16001}",
          "  admin: {address: 127.0.0.2, port: 16000}",
          "  trustDomain: example.org",
          "  certs: {cert: c.pem, key: k.pem, ca: ca.pem}",
          "  logLevel: debug",
          "  drainTimeout: 1m30s",
        ].join("\n"),
      ),
    );
    expect(spec).toMatchObject({
      service: "api",
      namespace: "prod",
      inbound: { address: "0.0.0.0", port: 16006 },
      outbound: { address: "::1", port: 16001 },
      admin: { address: "127.0.0.2", port: 16000 },
      trustDomain: "example.org",
      certs: { cert: "c.pem", key: "k.pem", ca: "ca.pem" },
      logLevel: "debug",
      drainTimeout: 90_000,
    });
  });

  test("upstream is required and must be a bare http://host:port", () => {
    expect(errorsOf(proxy("  {}"))).toEqual(["m.yaml#0 spec.upstream: required"]);
    const bad = (url: string) => errorsOf(proxy(`  upstream: "${url}"`));
    expect(bad("127.0.0.1:8080")).toEqual(['m.yaml#0 spec.upstream: expected a URL like http://127.0.0.1:8080, got "127.0.0.1:8080"']);
    expect(bad("localhost:8080")).toEqual(['m.yaml#0 spec.upstream: expected an http:// URL like http://127.0.0.1:8080, got "localhost:8080"']);
    expect(bad("localhost")).toEqual(['m.yaml#0 spec.upstream: expected a URL like http://127.0.0.1:8080, got "localhost"']);
    expect(bad("https://app:8443")).toEqual(['m.yaml#0 spec.upstream: expected an http:// URL like http://127.0.0.1:8080, got "https://app:8443"']);
    expect(bad("http://app:8080/api")).toEqual(["m.yaml#0 spec.upstream: expected only scheme, host and port, like http://127.0.0.1:8080"]);
    expect(bad("http://u:p@app:8080")).toEqual(["m.yaml#0 spec.upstream: must not hold a user name or password"]);
  });

  test("listeners: address, port, unknown fields", () => {
    const spec = `${UPSTREAM}\n  inbound: {address: 'not an ip', port: 0}\n  admin: {adress: 127.0.0.1}`;
    expect(errorsOf(proxy(spec))).toEqual([
      'm.yaml#0 spec.inbound.address: expected an IPv4 or IPv6 address or a hostname, got "not an ip"',
      "m.yaml#0 spec.inbound.port: expected port 1-65535",
      'm.yaml#0 spec.admin: unknown field "adress" (did you mean "address"?)',
    ]);
  });

  test("the admin listener is loopback only (127.0.0.0/8, ::1 in any spelling, localhost); --status serves probes from elsewhere", () => {
    for (const address of ["127.0.0.1", "127.9.9.9", "'::1'", "'0:0:0:0:0:0:0:1'", "localhost", "'::ffff:127.0.0.1'"]) expect([address, errorsOf(proxy(`${UPSTREAM}\n  admin: {address: ${address}}`))]).toEqual([address, []]);
    for (const address of ["0.0.0.0", "'::'", "10.0.0.1", "example.com", "128.0.0.1"])
      expect(errorsOf(proxy(`${UPSTREAM}\n  admin: {address: ${address}}`))).toEqual([
        "m.yaml#0 spec.admin.address: must be a loopback address (127.0.0.1, ::1 or localhost): the admin API is not served off this host; probes and scrapers elsewhere use the status listener (--status: /live, /ready, /metrics)",
      ]);
  });

  test("two listeners on one port and overlapping addresses clash", () => {
    expect(errorsOf(proxy(`${UPSTREAM}\n  admin: {port: 15006}`))).toEqual(["m.yaml#0 spec.admin.port: port 15006 is also used by inbound"]);
    expect(errorsOf(proxy(`${UPSTREAM}\n  outbound: {port: 15000}`))).toEqual(["m.yaml#0 spec.admin.port: port 15000 is also used by outbound"]);
    // Distinct specific addresses may share a port.
    expect(errorsOf(proxy(`${UPSTREAM}\n  outbound: {address: 127.0.0.2, port: 15000}`))).toEqual([]);
  });

  test("service, namespace, trustDomain, logLevel, drainTimeout", () => {
    const spec = [UPSTREAM, "  service: Web", "  namespace: a.b", "  trustDomain: Mesh.Local", "  logLevel: verbose", "  drainTimeout: 30"].join("\n");
    expect(errorsOf(proxy(spec))).toEqual([
      `m.yaml#0 spec.service: service "Web" must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
      `m.yaml#0 spec.namespace: namespace "a.b" must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
      `m.yaml#0 spec.trustDomain: trust domain "Mesh.Local" may hold only lowercase letters, digits, '.', '-' and '_'`,
      "m.yaml#0 spec.logLevel: expected one of trace, debug, info, warn, error, fatal",
      'm.yaml#0 spec.drainTimeout: duration 30 has no unit: use ms, s, m or h, like "250ms", "30s", "5m" or "1h30m"',
    ]);
  });

  test("tcpUpstreams: a called service and its port, bound on loopback by default; a bind port another listener holds is refused", () => {
    const ok = `${UPSTREAM}\n  tcpUpstreams:\n    - {service: postgres, port: 5432, bindPort: 15432}\n    - {service: redis.cache, port: 6379, bindAddress: "::1", bindPort: 16379}`;
    expect(specOf(proxy(ok)).tcpUpstreams).toEqual([
      { service: "postgres", port: 5432, bindAddress: "127.0.0.1", bindPort: 15432 },
      { service: "redis.cache", port: 6379, bindAddress: "::1", bindPort: 16379 },
    ]);
    const bad = [
      UPSTREAM,
      "  tcpUpstreams:",
      "    - {service: Postgres, port: 0, bindPort: 15001}",
      "    - {service: a.b.c, port: 5432, bindAddress: 10.0.0.300}",
      "    - {service: db, port: 5432, bindPort: 15432}",
      "    - {service: db, port: 5433, bindPort: 15432}",
      "    - null",
    ].join("\n");
    expect(errorsOf(proxy(bad))).toEqual([
      `m.yaml#0 spec.tcpUpstreams[0].service: service "Postgres" must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
      "m.yaml#0 spec.tcpUpstreams[0].port: expected port 1-65535",
      'm.yaml#0 spec.tcpUpstreams[1].service: "a.b.c": expected name or name.namespace',
      'm.yaml#0 spec.tcpUpstreams[1].bindAddress: expected an IPv4 or IPv6 address or a hostname, got "10.0.0.300"',
      "m.yaml#0 spec.tcpUpstreams[1].bindPort: required",
      "m.yaml#0 spec.tcpUpstreams[4]: expected object, got null",
      "m.yaml#0 spec.tcpUpstreams[0].bindPort: port 15001 is also used by outbound",
      "m.yaml#0 spec.tcpUpstreams[3].bindPort: port 15432 is also used by tcpUpstreams[2]",
    ]);
  });

  test("certs: dir, or all of cert, key and ca", () => {
    expect(specOf(proxy(`${UPSTREAM}\n  certs: {dir: /etc/mesh}`)).certs).toEqual({ dir: "/etc/mesh" });
    expect(errorsOf(proxy(`${UPSTREAM}\n  certs: {}`))).toEqual(["m.yaml#0 spec.certs: set dir, or cert, key and ca"]);
    expect(errorsOf(proxy(`${UPSTREAM}\n  certs: {dir: d, cert: c.pem}`))).toEqual(["m.yaml#0 spec.certs.dir: set either dir or cert, not both"]);
    expect(errorsOf(proxy(`${UPSTREAM}\n  certs: {cert: c.pem}`))).toEqual([
      "m.yaml#0 spec.certs.key: required with cert",
      "m.yaml#0 spec.certs.ca: required with cert",
    ]);
    expect(errorsOf(proxy(`${UPSTREAM}\n  certs: {cert: c.pem, key: '', ca: a.pem, crt: x}`))).toEqual([
      "m.yaml#0 spec.certs.key: must not be empty",
      'm.yaml#0 spec.certs: unknown field "crt" (did you mean "cert"?)',
    ]);
  });
});
