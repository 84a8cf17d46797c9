/**
 * Where a connection that netfilter redirected (mesh redirect) was going: the kernel keeps
 * the address it was sent to, and getsockopt(SO_ORIGINAL_DST) reads it. Bun has no socket
 * options, but its sockets expose their descriptor, so libc's getsockopt is called through
 * bun:ffi (measured: it reads the address a REDIRECT rule rewrote). Imported only by a
 * sidecar started with --transparent.
 */
import { dlopen, FFIType, ptr } from "bun:ffi";
import { isIP } from "node:net";
import { canonicalAddress } from "../core/ip-address.ts";

const SOL_IP = 0;
const SOL_IPV6 = 41;
/** SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST share the number. */
const SO_ORIGINAL_DST = 80;
const SOCKADDR_IN6_BYTES = 28;

export interface OriginalDestination {
  address: string;
  port: number;
}

type Getsockopt = (fd: number, level: number, name: number, value: ReturnType<typeof ptr>, length: ReturnType<typeof ptr>) => number;

/**
 * The reader of redirected connections' original destinations: (fd, the socket's local
 * address) → where it was going, or undefined when it was not redirected. Throws, saying
 * why, where libc's getsockopt cannot be had (not Linux with glibc).
 */
export function originalDestinationReader(): (fd: number, localAddress: string) => OriginalDestination | undefined {
  if (process.platform !== "linux") throw new Error(`--transparent reads redirected connections' destinations, which only Linux keeps (this is ${process.platform})`);
  const libc = dlopen("libc.so.6", { getsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 } });
  const getsockopt = libc.symbols.getsockopt as unknown as Getsockopt;
  // Scratch for one call at a time: the event loop makes one.
  const value = new Uint8Array(SOCKADDR_IN6_BYTES);
  const length = new Uint32Array(1);
  return (fd, localAddress) => {
    const six = isIP(localAddress) === 6 && !localAddress.startsWith("::ffff:");
    length[0] = value.length;
    if (getsockopt(fd, six ? SOL_IPV6 : SOL_IP, SO_ORIGINAL_DST, ptr(value), ptr(length)) !== 0) return undefined;
    const port = (value[2]! << 8) | value[3]!;
    if (!six) return { address: `${value[4]}.${value[5]}.${value[6]}.${value[7]}`, port };
    const groups: string[] = [];
    for (let i = 8; i < 24; i += 2) groups.push(((value[i]! << 8) | value[i + 1]!).toString(16));
    return { address: canonicalAddress(groups.join(":"))!, port };
  };
}
