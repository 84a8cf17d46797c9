/**
 * The demo's services written for Bun, served from the demo's own process: each is a
 * plain HTTP server on loopback that knows nothing of TLS — its sidecar does that and
 * tells it who called in `x-mesh-client-id`. `frontend` calls `catalog` and `pricing`
 * through its sidecar's outbound listener by Host header, as any HTTP client can.
 */
import type { Server } from "bun";

export const CALLER_HEADER = "x-mesh-client-id";

/** The caller identities each service saw, as its sidecar proved them. */
export class SeenCallers {
  private map = new Map<string, Set<string>>();
  add(service: string, caller: unknown): void {
    if (typeof caller !== "string" || !caller) return;
    const set = this.map.get(service) ?? new Set<string>();
    set.add(caller);
    this.map.set(service, set);
  }
  toJSON(): Record<string, string[]> {
    return Object.fromEntries([...this.map].map(([k, v]) => [k, [...v].sort()]));
  }
}

export interface Flakiness {
  /** Share of requests failed at random, 0..1. */
  randomFailure: number;
  /** Every `cycleMs`, fail everything for `outageMs` (starting `offsetMs` into the cycle). */
  cycleMs: number;
  outageMs: number;
  offsetMs: number;
}

/** The flaky instance: some random 503s, and a short outage every few seconds. */
export const DEMO_FLAKINESS: Flakiness = { randomFailure: 0.1, cycleMs: 8000, outageMs: 2000, offsetMs: 4000 };

function serve(fetch: (req: Request) => Response | Promise<Response>): Server<undefined> {
  return Bun.serve({ hostname: "127.0.0.1", port: 0, development: false, fetch });
}

function idOf(url: URL): number {
  return Number(url.pathname.split("/").pop()) || 0;
}

/** `pricing`: GET /price/N. Its /healthz always passes: only callers see its failures. */
export function startPricing(instance: string, seen: SeenCallers, flaky?: Flakiness): Server<undefined> {
  const started = Date.now();
  const failing = () => {
    if (!flaky) return false;
    const phase = (Date.now() - started) % flaky.cycleMs;
    return (phase >= flaky.offsetMs && phase < flaky.offsetMs + flaky.outageMs) || Math.random() < flaky.randomFailure;
  };
  return serve((req) => {
    const url = new URL(req.url);
    if (url.pathname === "/healthz") return Response.json({ ok: true });
    if (!url.pathname.startsWith("/price/")) return Response.json({ error: "no such path" }, { status: 404 });
    seen.add("pricing", req.headers.get(CALLER_HEADER));
    if (failing()) return Response.json({ error: `${instance} is having a bad moment` }, { status: 503 });
    const id = idOf(url);
    return Response.json({ id, cents: 199 + ((id * 37) % 800), instance, caller: req.headers.get(CALLER_HEADER) });
  });
}

/** `frontend`: GET /product/N, from catalog and pricing, called through the sidecar. */
export function startFrontend(outboundPort: () => number, seen: SeenCallers): Server<undefined> {
  const call = async (host: string, path: string): Promise<Record<string, unknown>> => {
    const res = await fetch(`http://127.0.0.1:${outboundPort()}${path}`, { headers: { host }, signal: AbortSignal.timeout(3000) });
    const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
    if (!res.ok) throw new Error(`${host} answered ${res.status}${res.headers.get("x-mesh-error") ? ` (${res.headers.get("x-mesh-error")})` : ""}`);
    return body;
  };
  return serve(async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/healthz") return Response.json({ ok: true });
    seen.add("frontend", req.headers.get(CALLER_HEADER));
    const id = idOf(url);
    try {
      const [item, price] = await Promise.all([call("catalog", `/items/${id}`), call("pricing", `/price/${id}`)]);
      seen.add("catalog", item.caller);
      return Response.json({ id, name: item.name, cents: price.cents, catalog: item.served_by, pricing: price.instance });
    } catch (err) {
      return Response.json({ error: (err as Error).message }, { status: 502 });
    }
  });
}

/** The catalog, in Bun, only for a machine without python3. Same API as catalog-py.ts. */
export function startCatalogInBun(): Server<undefined> {
  const items = ["kettle", "teapot", "mug", "saucer", "spoon", "strainer", "tray", "cosy"];
  return serve((req) => {
    const url = new URL(req.url);
    if (url.pathname === "/healthz") return Response.json({ ok: true });
    const id = idOf(url);
    return Response.json({ id, name: items[id % items.length], served_by: "bun", caller: req.headers.get(CALLER_HEADER) });
  });
}

/** What loadgen's sidecar fronts: nobody calls loadgen, but every sidecar has an upstream. */
export function startIdle(): Server<undefined> {
  return serve(() => Response.json({ ok: true }));
}
