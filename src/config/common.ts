/** Field schemas shared by kinds: names, ports, addresses, listeners, uniqueness checks. */
import { isIP } from "node:net";
import { z } from "zod";
import { nameProblem, trustDomainProblem } from "../pki/spiffe";
import { canonicalAddress, isLoopback } from "../core/ip-address";

/**
 * Cross-field checks run even when sibling fields are invalid, so every error shows at
 * once; but only on an object or array, so a check never reads fields of null or a number.
 */
export const always = { when: (payload: { value: unknown }) => typeof payload.value === "object" && payload.value !== null };

/** The objects of `list` with their places, for such a check: anything else there, or no list, is its own schema's error. */
export function listed<T extends object>(list: readonly T[] | undefined): [T, number][] {
  if (!Array.isArray(list)) return [];
  return list.flatMap((item, i) => (typeof item === "object" && item !== null ? [[item, i] as [T, number]] : []));
}

/** A DNS label (what namespaces and service names are); `what` names it in the message. */
export const dnsLabel = (what: string) =>
  z.string().superRefine((value, ctx) => {
    const problem = nameProblem(what, value);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  });

/** A policy's `spec.service`: a Service of the policy's namespace, or "*" for all of them; `what` its sidecars do with it. */
export const policyService = (what: string) =>
  z.union([z.literal("*"), dnsLabel("service")]).describe(`The Service, in this namespace, whose sidecars ${what} on their inbound; "*" for every service in the namespace.`);

export const TrustDomain = z.string().superRefine((value, ctx) => {
  const problem = trustDomainProblem(value);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/** A TCP port. One message for every way it can be wrong, except missing ("required"). */
export const Port = z
  .int({ error: (iss) => (iss.input === undefined ? undefined : "expected port 1-65535") })
  .min(1)
  .max(65535);

const HOST_LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** An IPv4 or IPv6 address, or an RFC 1123 hostname (not all-numeric, so "10.0.0.300" is no host). */
export function isHost(value: string): boolean {
  if (isIP(value) !== 0) return true;
  const name = value.endsWith(".") ? value.slice(0, -1) : value;
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split(".");
  return labels.every((label) => HOST_LABEL.test(label)) && !/^\d+$/.test(labels.at(-1)!);
}

export const Host = z.string().superRefine((value, ctx) => {
  if (!isHost(value)) ctx.addIssue({ code: "custom", message: `expected an IPv4 or IPv6 address or a hostname, got "${value}"` });
});

/** An IPv4 or IPv6 address (no zone), in its canonical form (core/ip-address.ts), so equal addresses compare equal. */
export const IPAddress = z
  .string()
  .refine((value) => canonicalAddress(value) !== undefined, { error: (iss) => `expected an IPv4 or IPv6 address (without a %zone), got "${String(iss.input)}"` })
  .transform((value) => canonicalAddress(value)!);

export const NonEmpty = z.string().min(1);

/** A locality: the zone an instance runs in, as its operator names them ("eu-west-1a"). */
export const Zone = z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/, "expected a zone name: letters, digits, '.', '_' or '-', 1-63 characters");

/** A listener's connection limit (core/connection-budget.ts); absent: derived from the open-files limit. */
export const MaxConnections = z.number().int().positive().optional();

export const StringMap = z.record(z.string(), z.string());

/** An `{address, port}` a component listens on, with defaults; omitted entirely → all defaults. */
export function listener(address: string, port: number, description: string) {
  return z
    .strictObject({
      address: Host.default(address).describe(`Address to bind; default ${address}.`),
      port: Port.default(port).describe(`Port to bind; default ${port}.`),
    })
    .prefault({})
    .describe(description);
}

/**
 * A listener for an admin API: loopback only, so nothing off the host reaches it
 * (`elsewhere`: what to use from elsewhere instead).
 */
export function loopbackListener(address: string, port: number, description: string, elsewhere: string) {
  return z
    .strictObject({
      address: Host.default(address)
        .refine(isLoopback, { message: `must be a loopback address (127.0.0.1, ::1 or localhost): the admin API is not served off this host; ${elsewhere}` })
        .describe(`Address to bind, loopback only; default ${address}.`),
      port: Port.default(port).describe(`Port to bind; default ${port}.`),
    })
    .prefault({})
    .describe(description);
}

/** A listener that exists only when configured; `{}` binds the defaults. */
export function optionalListener(address: string, port: number, description: string) {
  return z
    .strictObject({
      address: Host.default(address).describe(`Address to bind; default ${address}.`),
      port: Port.default(port).describe(`Port to bind; default ${port}.`),
    })
    .optional()
    .describe(description);
}

const WILDCARDS = new Set(["0.0.0.0", "::", ""]);

function overlaps(a: string, b: string): boolean {
  return a === b || WILDCARDS.has(a) || WILDCARDS.has(b);
}

type Listen = { address?: unknown; port?: unknown } | undefined;

/** The first pair of listeners that would bind one port on overlapping addresses: [earlier, later]. Port 0 never clashes. */
export function listenerClash(listeners: Record<string, Listen>, names: readonly string[]): [string, string] | undefined {
  for (let i = 0; i < names.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = listeners[names[j]!];
      const b = listeners[names[i]!];
      if (typeof a?.port !== "number" || a.port === 0 || a.port !== b?.port) continue;
      if (typeof a.address !== "string" || typeof b.address !== "string" || !overlaps(a.address, b.address)) continue;
      return [names[j]!, names[i]!];
    }
  }
  return undefined;
}

/** Rejects two listeners of one process that would bind the same port on overlapping addresses. */
export function noListenerClash(names: readonly string[]) {
  return (spec: Record<string, unknown>, ctx: z.core.$RefinementCtx) => {
    if (typeof spec !== "object" || spec === null) return;
    const clash = listenerClash(spec as Record<string, Listen>, names);
    if (!clash) return;
    const port = (spec[clash[1]] as { port: number }).port;
    ctx.addIssue({ code: "custom", path: [clash[1], "port"], message: `port ${port} is also used by ${clash[0]}` });
  };
}

/**
 * Rejects list items whose key (a name, a port, an address) repeats. `keyOf` sees raw
 * items (checks run even when items are invalid), so it must tolerate any shape.
 */
export function uniqueBy(keyOf: (item: Record<string, unknown>) => string | undefined, field: string | undefined, what: string) {
  return (items: unknown, ctx: z.core.$RefinementCtx) => {
    if (!Array.isArray(items)) return;
    const seen = new Map<string, number>();
    items.forEach((item, i) => {
      if (typeof item !== "object" || item === null) return;
      const key = keyOf(item as Record<string, unknown>);
      if (key === undefined) return;
      const first = seen.get(key);
      if (first === undefined) seen.set(key, i);
      else ctx.addIssue({ code: "custom", path: field ? [i, field] : [i], message: `duplicate ${what} ${key} (also at index ${first})` });
    });
  };
}
