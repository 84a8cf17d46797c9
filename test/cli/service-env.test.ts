/** The environment `mesh run` gives its service: where each TCP upstream's local listener is. */
import { expect, test } from "bun:test";
import { serviceEnv, tcpEnvName } from "../../src/cli/service-env.ts";

test("each TCP upstream is named by service and port, in a name a shell accepts, and dialable even when bound to a wildcard", () => {
  expect(tcpEnvName("postgres", 5432)).toBe("MESH_TCP_POSTGRES_5432");
  expect(tcpEnvName("orders-db.shop", 6379)).toBe("MESH_TCP_ORDERS_DB_SHOP_6379");
  const env = serviceEnv({}, {
    service: "orders",
    outbound: { address: "127.0.0.1", port: 15001 },
    admin: { address: "127.0.0.1", port: 15000 },
    tcp: [
      { service: "postgres", port: 5432, address: "127.0.0.1", boundPort: 15432 },
      { service: "cache", port: 6379, address: "0.0.0.0", boundPort: 16379 },
      { service: "queue", port: 5672, address: "::1", boundPort: 15672 },
    ],
  });
  expect(Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith("MESH_TCP_")))).toEqual({
    MESH_TCP_POSTGRES_5432: "127.0.0.1:15432",
    MESH_TCP_CACHE_6379: "127.0.0.1:16379",
    MESH_TCP_QUEUE_5672: "[::1]:15672",
  });
});
