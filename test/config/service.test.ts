import { describe, expect, test } from "bun:test";
import { doc, errorsOf, specOf } from "./helpers";

const service = (spec: string, metadata?: string) => doc("Service", spec, metadata);

describe("Service", () => {
  test("minimal: one port; defaults targetPort and identity; no protocol unless declared (calls keep their HTTP version)", () => {
    expect(specOf(service("  ports: [{name: http, port: 80}]", "  name: web"))).toEqual({
      ports: [{ name: "http", port: 80, targetPort: 80 }],
      mtls: true,
      identity: "web",
    });
  });

  test("full: static endpoints with weight default 1, explicit identity", () => {
    const spec = specOf(
      service(
        [
          "  identity: web-sa",
          "  ports:",
          "    - {name: api, port: 9090, protocol: http, targetPort: 19090}",
          "    - {name: admin, port: 9000}",
          "  endpoints:",
          "    - {address: 10.0.0.1, port: 19090, zone: z1}",
          '    - {address: "::1", port: 19090, weight: 0}',
          "    - {address: web.internal, port: 19090, weight: 2.5}",
        ].join("\n"),
      ),
    );
    expect(spec).toEqual({
      identity: "web-sa",
      mtls: true,
      ports: [
        { name: "api", port: 9090, protocol: "http", targetPort: 19090 },
        { name: "admin", port: 9000, targetPort: 9000 },
      ],
      endpoints: [
        { address: "10.0.0.1", port: 19090, weight: 1, zone: "z1" },
        { address: "::1", port: 19090, weight: 0 },
        { address: "web.internal", port: 19090, weight: 2.5 },
      ],
    });
  });

  test("a protocol the proxies do not carry is refused with the protocols they do; http2, grpc and tcp are carried", () => {
    const ports = ["  ports:", "    - {name: a, port: 9090, protocol: grpc}", "    - {name: b, port: 5432, protocol: tcp}", "    - {name: c, port: 81, protocol: http2}", "    - {name: d, port: 82, protocol: smtp}"];
    expect(errorsOf(service(ports.join("\n")))).toEqual([expect.stringMatching(/^m\.yaml#0 spec\.ports\[3\]\.protocol: .*http, http2, grpc, tcp/)]);
    expect(errorsOf(service(ports.slice(0, 4).join("\n")))).toEqual([]);
  });

  test("ports are required and must not be empty", () => {
    expect(errorsOf(service("  {}"))).toEqual(["m.yaml#0 spec.ports: required"]);
    expect(errorsOf(service("  ports: []"))).toEqual(["m.yaml#0 spec.ports: expected at least 1 item"]);
  });

  test("port constraints", () => {
    const ports = ["  ports:", "    - {name: a, port: 0}", "    - {name: b, port: 65536}", '    - {name: c, port: "80"}', "    - {name: d, port: 8.5}", "    - {name: e}"];
    expect(errorsOf(service(ports.join("\n")))).toEqual([
      "m.yaml#0 spec.ports[0].port: expected port 1-65535",
      "m.yaml#0 spec.ports[1].port: expected port 1-65535",
      "m.yaml#0 spec.ports[2].port: expected port 1-65535",
      "m.yaml#0 spec.ports[3].port: expected port 1-65535",
      "m.yaml#0 spec.ports[4].port: required",
    ]);
  });

  test("protocol, name, targetPort and unknown fields", () => {
    const spec = "  ports:\n    - {name: HTTP, port: 80, protocol: https, targetPort: 0, proto: tcp}";
    expect(errorsOf(service(spec))).toEqual([
      `m.yaml#0 spec.ports[0].name: port name "HTTP" must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
      "m.yaml#0 spec.ports[0].protocol: expected one of http, http2, grpc, tcp",
      "m.yaml#0 spec.ports[0].targetPort: expected port 1-65535",
      'm.yaml#0 spec.ports[0]: unknown field "proto" (did you mean "protocol"?)',
    ]);
  });

  test("port names and numbers are unique, reported even beside other errors", () => {
    const ports = ["  ports:", "    - {name: http, port: 80}", "    - {name: http, port: 81}", "    - {name: admin, port: 80}", "    - {name: x, port: -1}"];
    expect(errorsOf(service(ports.join("\n")))).toEqual([
      "m.yaml#0 spec.ports[3].port: expected port 1-65535",
      'm.yaml#0 spec.ports[1].name: duplicate port name "http" (also at index 0)',
      "m.yaml#0 spec.ports[2].port: duplicate port 80 (also at index 0)",
    ]);
  });

  test("endpoint constraints", () => {
    const spec = [
      "  ports: [{name: http, port: 80}]",
      "  endpoints:",
      "    - {address: 10.0.0.256, port: 80, weight: -1, zone: ''}",
      "    - {address: 'bad host', port: 99999, weigth: 2}",
      "    - {port: 80, weight: heavy}",
      "    - {address: 10.0.0.1, port: 80}",
      "    - {address: 10.0.0.1, port: 80}",
    ].join("\n");
    expect(errorsOf(service(spec))).toEqual([
      'm.yaml#0 spec.endpoints[0].address: expected an IPv4 or IPv6 address or a hostname, got "10.0.0.256"',
      "m.yaml#0 spec.endpoints[0].weight: expected number ≥ 0",
      "m.yaml#0 spec.endpoints[0].zone: expected a zone name: letters, digits, '.', '_' or '-', 1-63 characters",
      'm.yaml#0 spec.endpoints[1].address: expected an IPv4 or IPv6 address or a hostname, got "bad host"',
      "m.yaml#0 spec.endpoints[1].port: expected port 1-65535",
      'm.yaml#0 spec.endpoints[1]: unknown field "weigth" (did you mean "weight"?)',
      "m.yaml#0 spec.endpoints[2].address: required",
      "m.yaml#0 spec.endpoints[2].weight: expected number, got string",
      "m.yaml#0 spec.endpoints[4]: duplicate endpoint 10.0.0.1:80 (also at index 3)",
    ]);
  });

  test("identity must be a DNS label", () => {
    expect(errorsOf(service("  ports: [{name: http, port: 80}]\n  identity: web.sa"))).toEqual([
      `m.yaml#0 spec.identity: identity "web.sa" must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
    ]);
  });

  test("unknown spec fields are errors", () => {
    expect(errorsOf(service("  ports: [{name: http, port: 80}]\n  endpoint: []"))).toEqual([
      'm.yaml#0 spec: unknown field "endpoint" (did you mean "endpoints"?)',
    ]);
  });
});

describe("addresses", () => {
  test("IP addresses, IPv6 in its one canonical form, none twice", () => {
    expect(specOf(service("  ports: [{name: http, port: 80}]\n  addresses: [10.96.0.5, 'FD00:0:0::5']")).addresses).toEqual(["10.96.0.5", "fd00::5"]);
    expect(errorsOf(service("  ports: [{name: http, port: 80}]\n  addresses: [payments.local, 10.96.0.5, 10.96.0.5, 'fd00::5', 'fd00:0::5']"))).toEqual([
      'm.yaml#0 spec.addresses[0]: expected an IPv4 or IPv6 address (without a %zone), got "payments.local"',
      "m.yaml#0 spec.addresses[2]: duplicate address 10.96.0.5 (also at index 1)",
      "m.yaml#0 spec.addresses[4]: duplicate address fd00::5 (also at index 3)",
    ]);
    expect(errorsOf(service("  ports: [{name: http, port: 80}]\n  addresses: []"))).toEqual(["m.yaml#0 spec.addresses: expected at least 1 item"]);
    // None that no caller could reach it at: unspecified, loopback, multicast. ff::1 is 00ff::1, not multicast.
    expect(errorsOf(service("  ports: [{name: http, port: 80}]\n  addresses: [0.0.0.0, 127.0.0.5, '::1', 224.0.0.1, 'ff02::1', 'ff::1', 10.0.0.1]"))).toEqual([
      "m.yaml#0 spec.addresses[0]: 0.0.0.0 is the unspecified address; a Service cannot claim it",
      "m.yaml#0 spec.addresses[1]: 127.0.0.5 is a loopback address, whose calls stay on their host and are never redirected; a Service cannot claim it",
      "m.yaml#0 spec.addresses[2]: ::1 is a loopback address, whose calls stay on their host and are never redirected; a Service cannot claim it",
      "m.yaml#0 spec.addresses[3]: 224.0.0.1 is a multicast address; a Service cannot claim it",
      "m.yaml#0 spec.addresses[4]: ff02::1 is a multicast address; a Service cannot claim it",
    ]);
  });
});
