/**
 * The config snapshots the control plane keeps per view (a service and the services it
 * calls): a cache, so it is bounded whatever the callers ask for, and holds only what the
 * current revision needs. A real view on an embedded store; nothing mocked.
 */
import { afterAll, expect, test } from "bun:test";
import { createLogger } from "../../src/core/log.ts";
import { ControlPlaneView } from "../../src/control-plane/view.ts";
import { Subscriptions } from "../../src/control-plane/subscriptions.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import { tempDir } from "../helpers/cli.ts";

const tmp = tempDir("mesh-subscriptions-");
afterAll(() => tmp.cleanup());

test("3,000 distinct views keep at most 1,024 snapshots, and each is still answered right", async () => {
  const store = openSqliteStore(tmp.path);
  const view = new ControlPlaneView(store, createLogger({ level: "silent" }));
  await view.start();
  try {
    const subscriptions = new Subscriptions(view, () => "bundle");
    const first = subscriptions.current({ namespace: "default", service: "orders", calls: ["svc0"] });
    for (let i = 0; i < 3000; i++) subscriptions.current({ namespace: "default", service: "orders", calls: [`svc${i}`] });
    expect(subscriptions.cachedViews).toBeLessThanOrEqual(1024);
    // An evicted view is built again, the same.
    expect(subscriptions.current({ namespace: "default", service: "orders", calls: ["svc0"] })).toEqual(first);
  } finally {
    view.stop();
    await store.close();
  }
});
