/**
 * IP addresses in one written form each, so that equal addresses compare equal: IPv4
 * dotted, IPv6 as the URL parser writes it (compressed, lower case), and an IPv4-mapped
 * IPv6 address (::ffff:10.0.0.5, ::ffff:a00:5) as the IPv4 address it is. A zone
 * (fe80::1%eth0) names an interface, not an address anyone else can reach: none.
 */
import { isIP } from "node:net";

const MAPPED = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/;

/** The canonical form of `text`, or undefined when it is not an IP address (or carries a zone). */
export function canonicalAddress(text: string): string | undefined {
  const family = isIP(text);
  if (family === 4) return text;
  if (family !== 6 || text.includes("%")) return undefined;
  const v6 = new URL(`http://[${text}]/`).hostname.slice(1, -1);
  const mapped = MAPPED.exec(v6);
  if (mapped === null) return v6;
  const high = parseInt(mapped[1]!, 16);
  const low = parseInt(mapped[2]!, 16);
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
}

/** Whether `address` is this host's loopback: 127.0.0.0/8, ::1 (either in any spelling), or "localhost". */
export function isLoopback(address: string): boolean {
  if (address.toLowerCase() === "localhost") return true;
  const canonical = canonicalAddress(address);
  return canonical !== undefined && (canonical === "::1" || canonical.startsWith("127."));
}

/** `address:port` as a URL or a Host field writes it: an IPv6 address in brackets. */
export function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}
