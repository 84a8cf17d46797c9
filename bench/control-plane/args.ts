/** Command line of `npm run bench:control-plane`. */
import { parseArgs } from "node:util";

export interface Options {
  quick: boolean;
  proxies: number;
  services: number;
  simulators: number;
  rounds: number;
  leaseTtl: string;
  /** "proxy": one client (own connections) per simulated proxy, like real sidecars; "service": one shared per service. */
  clientPer: "proxy" | "service";
  json?: string;
  mesh?: string;
}

export const USAGE = `usage: npm run bench:control-plane -- [options]

  --proxies N          simulated subscribed proxies (default 500, quick 50; at most 5000)
  --quick              smoke run: 50 proxies, 2 rounds, well under 30 s
  --rounds M           policy changes measured (default 5, quick 2)
  --services S         Services svc-0..svc-(S-1); proxies are spread over them (default 10)
  --simulators P       simulator processes, N/P proxies each (default 4)
  --lease-ttl DURATION the control plane's --lease-ttl; heartbeats every third of it (default 30s)
  --client proxy|service  one mTLS client per proxy (default, like real sidecars) or per service
  --json FILE          also write the results as JSON
  --mesh PATH|source   mesh binary for the control plane (default: dist/mesh if built, else source)
`;

function whole(text: string, flag: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${flag}: expected a whole number from ${min} to ${max}, got "${text}"`);
  return n;
}

export function parseOptions(argv: string[]): Options | "help" {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      proxies: { type: "string" },
      rounds: { type: "string" },
      services: { type: "string", default: "10" },
      simulators: { type: "string", default: "4" },
      "lease-ttl": { type: "string", default: "30s" },
      client: { type: "string", default: "proxy" },
      json: { type: "string" },
      mesh: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return "help";
  const quick = values.quick ?? false;
  const client = values.client ?? "proxy";
  if (client !== "proxy" && client !== "service") throw new Error(`--client: expected proxy or service, got "${client}"`);
  const proxies = whole(values.proxies ?? (quick ? "50" : "500"), "--proxies", 1, 5000);
  return {
    quick,
    proxies,
    services: whole(values.services ?? "10", "--services", 1, 100),
    simulators: Math.min(proxies, whole(values.simulators ?? "4", "--simulators", 1, 32)),
    rounds: whole(values.rounds ?? (quick ? "2" : "5"), "--rounds", 1, 100),
    leaseTtl: values["lease-ttl"] ?? "30s",
    clientPer: client,
    json: values.json,
    mesh: values.mesh,
  };
}
