import { describe, expect, test } from "bun:test";
import type { Service } from "../../src/config/kinds/service.ts";
import { doc, manifestOf } from "../config/helpers.ts";
import { upstreamHttpOf } from "../../src/proxy/upstream-protocol.ts";

const service = (name: string, ports: string, namespace = "default") => manifestOf(doc("Service", `  ports: ${ports}`, `  name: ${name}\n  namespace: ${namespace}`)) as Service;
const subject = { service: "api", namespace: "default", trustDomain: "mesh.local", httpPort: 8080 };

describe("which HTTP the local service speaks, by its own Service's word", () => {
  test("the port whose targetPort is the upstream's: http is HTTP/1.1, http2 and grpc HTTP/2", () => {
    expect(upstreamHttpOf([service("api", "[{name: web, port: 80, targetPort: 8080, protocol: http}]")], subject)).toBe("http1");
    expect(upstreamHttpOf([service("api", "[{name: web, port: 80, targetPort: 8080, protocol: http2}]")], subject)).toBe("http2");
    expect(upstreamHttpOf([service("api", "[{name: rpc, port: 8080, protocol: grpc}]")], subject)).toBe("http2");
  });

  test("undeclared, another port's, another service's or namespace's, tcp, or ports that disagree: each call keeps its version", () => {
    expect(upstreamHttpOf([service("api", "[{name: web, port: 80, targetPort: 8080}]")], subject)).toBeUndefined();
    expect(upstreamHttpOf([service("api", "[{name: web, port: 80, targetPort: 9090, protocol: http}]")], subject)).toBeUndefined();
    expect(upstreamHttpOf([service("web", "[{name: web, port: 80, targetPort: 8080, protocol: http}]")], subject)).toBeUndefined();
    expect(upstreamHttpOf([service("api", "[{name: web, port: 80, targetPort: 8080, protocol: http}]", "other")], subject)).toBeUndefined();
    expect(upstreamHttpOf([service("api", "[{name: db, port: 8080, protocol: tcp}]")], subject)).toBeUndefined();
    expect(upstreamHttpOf([service("api", "[{name: a, port: 80, targetPort: 8080, protocol: http}, {name: b, port: 81, targetPort: 8080, protocol: grpc}]")], subject)).toBeUndefined();
    expect(upstreamHttpOf([], subject)).toBeUndefined();
  });

  test("two ports to the same target that agree", () => {
    expect(upstreamHttpOf([service("api", "[{name: a, port: 80, targetPort: 8080, protocol: http}, {name: b, port: 81, targetPort: 8080, protocol: http}]")], subject)).toBe("http1");
  });
});
