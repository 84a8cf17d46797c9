/** What the coordinator and a simulator process exchange: its config file and its loopback control API. */

export interface SimConfig {
  apiUrl: string;
  bootstrapUrl: string;
  bundlePem: string;
  trustDomain: string;
  certsDir: string;
  clientPer: "proxy" | "service";
  /** One join token per service this simulator hosts. */
  tokens: Record<string, string>;
  proxies: { service: string; address: string; port: number }[];
}

export interface SimErrors {
  register: number;
  heartbeat: number;
  poll: number;
  ack: number;
  /** Distinct error messages (digits folded) → count, at most 20 kept. */
  messages: Record<string, number>;
}

export interface SimStatus {
  proxies: number;
  registered: number;
  /** Proxies whose last acknowledgement is at or after `since`. */
  ackedSince: number;
  /** Last acknowledged version → how many proxies. */
  versions: Record<string, number>;
  errors: SimErrors;
}

/** Wall-clock ms (Date.now) at which one proxy received a version and its ack was accepted. */
export interface VersionTime {
  receivedAt: number;
  ackedAt: number;
}

export interface SimTimes {
  items: VersionTime[];
  /** Proxies with no record of the version. */
  missing: number;
}
