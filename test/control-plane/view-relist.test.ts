/**
 * A replica's view whose store watch ended (history compacted under it) lists the store
 * again; a list that fails (the store out of reach) must neither freeze the view for good
 * nor empty it: the last view keeps serving, `sync()` says it is stale and why, and it
 * keeps trying until the store answers. A real embedded store, its list made to fail.
 */
import { afterAll, expect, test } from "bun:test";
import { createLogger } from "../../src/core/log.ts";
import { ControlPlaneView } from "../../src/control-plane/view.ts";
import { StoreError } from "../../src/store/errors.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store } from "../../src/store/store.ts";
import { tempDir } from "../helpers/cli.ts";
import { serviceManifest } from "../helpers/control-plane.ts";
import { eventually } from "../helpers/wait.ts";

const tmp = tempDir("mesh-view-relist-");
afterAll(() => tmp.cleanup());

test("a failed re-list keeps the last view serving, shows it stale, and is tried again until the store answers", async () => {
  const store = openSqliteStore(tmp.path);
  let listsFail = false;
  let endWatch: ((err: StoreError) => void) | undefined;
  const unreliable = new Proxy(store, {
    get(target, prop) {
      if (prop === "list")
        return async (prefix: string) => {
          if (listsFail) throw new StoreError("unavailable", "etcd: no member answered /v3/kv/range within 15000 ms");
          return target.list(prefix);
        };
      if (prop === "watch")
        return (prefix: string, handlers: Parameters<Store["watch"]>[1], from?: number) => {
          const cancel = target.watch(prefix, handlers, from);
          endWatch = (err) => {
            cancel();
            handlers.onError(err);
          };
          return cancel;
        };
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const view = new ControlPlaneView(unreliable, createLogger({ level: "silent" }));
  const put = (name: string) => store.put(`/mesh/manifests/Service/default/${name}`, JSON.stringify(serviceManifest(name)));
  await view.start();
  try {
    await put("before");
    expect(await eventually(() => view.manifests.has("Service/default/before"), 2_000, 5)).toBe(true);
    expect(view.sync()).toEqual({ synced: true, revision: view.revision, failedRelists: 0 });

    listsFail = true;
    endWatch!(new StoreError("compacted", "watch from revision 3: history before 9 was compacted; re-list and watch again", 9));
    await put("meanwhile");
    expect(await eventually(() => view.sync().failedRelists >= 2, 5_000, 20)).toBe(true);
    const stale = view.sync();
    expect(stale.synced).toBe(false);
    expect(stale.error).toContain("no member answered");
    expect(Date.parse(stale.staleSince!)).toBeLessThanOrEqual(Date.now());
    // The last view keeps serving meanwhile.
    expect(view.manifests.has("Service/default/before")).toBe(true);
    expect(view.manifests.has("Service/default/meanwhile")).toBe(false);

    listsFail = false;
    expect(await eventually(() => view.sync().synced && view.manifests.has("Service/default/meanwhile"), 8_000, 20)).toBe(true);
    // And it follows the store again.
    await put("after");
    expect(await eventually(() => view.manifests.has("Service/default/after"), 2_000, 5)).toBe(true);
    expect(view.sync().failedRelists).toBe(0);
  } finally {
    view.stop();
    await store.close();
  }
});
