/**
 * Bun's bind failures say "Failed to listen at 127.0.0.1" or "Is port 15000 in use?":
 * neither names the listener nor, always, the port. This names both, and the cause.
 */
import { MeshError } from "./errors.ts";
import { hostPort } from "./ip-address.ts";

const CAUSES: Record<string, string> = {
  EADDRINUSE: "the port is in use (another process, or another listener of this one)",
  EADDRNOTAVAIL: "no interface of this host has that address",
  EACCES: "binding a port below 1024 needs privilege (CAP_NET_BIND_SERVICE)",
};

/** Runs `bind`; a failure is rethrown as an error naming `where` (the listener) and the address. */
export function bindNamed<T>(where: string, address: string, port: number, bind: () => T): T {
  try {
    return bind();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const cause = typeof code === "string" ? CAUSES[code] ?? code : (err as Error).message;
    throw new MeshError(`cannot listen on ${hostPort(address, port)}: ${cause}`, where);
  }
}
