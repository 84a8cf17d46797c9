/**
 * Brings the demo mesh up, in order: the control plane, its manifests, the services,
 * one sidecar per instance (each bootstrapping its certificate from a join token), and
 * discovery settled. Every process goes through `children` and every in-process server
 * through `servers`, so whatever was started is stopped however this ends.
 */
import type { Server } from "bun";
import { CATALOG_PY } from "./catalog-py.ts";
import type { Children } from "./children.ts";
import { startDemoControlPlane, type DemoControlPlane } from "./control-plane.ts";
import { demoManifests } from "./manifests.ts";
import { DEMO_FLAKINESS, SeenCallers, startCatalogInBun, startFrontend, startIdle, startPricing } from "./services.ts";
import { startSidecar, waitForDiscovery, type DemoSidecar, type InstanceSpec } from "./sidecars.ts";
import type { Watched } from "./stats.ts";

/** In-process servers; once closed, any server added is stopped at once. */
export class Servers {
  private list: Server<undefined>[] = [];
  private closed = false;
  add(server: Server<undefined>): Server<undefined> {
    if (this.closed) void server.stop(true);
    else this.list.push(server);
    return server;
  }
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.list.map((s) => s.stop(true)));
  }
}

export interface Stack {
  cp: DemoControlPlane;
  sidecars: DemoSidecar[];
  watched: Watched[];
  seen: SeenCallers;
  catalog: { lang: string; pid?: number };
}

export interface StackOptions {
  dir: string;
  children: Children;
  servers: Servers;
  /** The Python interpreter for catalog; Bun serves it when this is not found. */
  python: string;
  /** `warning`: a step that went otherwise than planned, still fine to go on. */
  progress: (step: string, detail: Record<string, unknown>, warning?: boolean) => void;
}

export async function startStack(o: StackOptions): Promise<Stack> {
  const cp = await startDemoControlPlane(o.children, o.dir);
  o.progress(`control plane: embedded store, new CA for ${cp.trustDomain}, admin ${cp.adminUrl}`, { pid: cp.pid, adminUrl: cp.adminUrl });
  await cp.apply(demoManifests());
  o.progress("applied Services frontend, catalog, pricing and pricing's DestinationPolicy (retries, outlier detection)", {});

  const seen = new SeenCallers();
  let frontendOutbound = 0;
  const frontend = o.servers.add(startFrontend(() => frontendOutbound, seen));
  const pricing1 = o.servers.add(startPricing("pricing-1", seen));
  const pricing2 = o.servers.add(startPricing("pricing-2", seen, DEMO_FLAKINESS));
  const idle = o.servers.add(startIdle());
  const catalog = await startCatalog(o);
  o.progress(`services: frontend and pricing ×2 on Bun, catalog on ${catalog.lang}; pricing-2 is flaky`, { catalog });

  const specs: (InstanceSpec & { lang: string; note?: string; client?: boolean })[] = [
    { instance: "loadgen", service: "loadgen", upstreamPort: idle.port!, calls: ["frontend"], lang: "Bun", client: true },
    { instance: "frontend", service: "frontend", upstreamPort: frontend.port!, calls: ["catalog", "pricing"], lang: "Bun" },
    { instance: "catalog", service: "catalog", upstreamPort: catalog.port, lang: catalog.lang },
    { instance: "pricing-1", service: "pricing", upstreamPort: pricing1.port!, lang: "Bun" },
    // Its health check passes, so it stays in discovery: only its callers see it fail.
    { instance: "pricing-2", service: "pricing", upstreamPort: pricing2.port!, healthPath: "/healthz", lang: "Bun", note: "flaky" },
  ];
  const sidecars = await Promise.all(
    specs.map(async (spec) => {
      const s = await startSidecar(o.children, cp, o.dir, spec);
      o.progress(`sidecar ${s.instance}: certificate for ${s.identity} from a join token`, { pid: s.pid, identity: s.identity, ports: s.ports });
      return s;
    }),
  );
  frontendOutbound = sidecars.find((s) => s.instance === "frontend")!.ports.outbound;
  await waitForDiscovery(sidecars);
  o.progress("discovery: every caller's sidecar sees every instance it calls", {});

  const watched = specs.map((spec, i) => ({
    instance: spec.instance,
    service: spec.service,
    lang: spec.lang,
    note: spec.note,
    adminPort: sidecars[i]!.ports.admin,
    calls: spec.calls ?? [],
    client: spec.client,
  }));
  return { cp, sidecars, watched, seen, catalog: { lang: catalog.lang, pid: catalog.pid } };
}

async function startCatalog(o: StackOptions): Promise<{ port: number; lang: string; pid?: number }> {
  if (Bun.which(o.python)) {
    const child = await o.children.start(`catalog (${o.python})`, [o.python, "-c", CATALOG_PY], { stdinPipe: true });
    return { port: child.ready.port as number, lang: "Python", pid: child.pid };
  }
  o.progress(`${o.python} not found: catalog runs on Bun instead`, {}, true);
  return { port: o.servers.add(startCatalogInBun()).port!, lang: "Bun" };
}
