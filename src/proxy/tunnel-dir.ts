/**
 * Where the servers behind the listeners' WebSocket tunnels listen: Unix sockets in a
 * directory made for this sidecar (mode 0700), so only its user's processes can connect,
 * and removed when it drains. Age-based cleaners of /tmp (systemd-tmpfiles removes what
 * has not changed for 10 days on some distributions) would take the sockets from a
 * long-running sidecar, so their times are refreshed every hour.
 */
import { mkdtempSync, rmSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const REFRESH_EVERY_MS = 3_600_000;
/** A Unix socket's path fits in 108 bytes (sun_path), its terminating NUL included. */
const MAX_SOCKET_PATH = 107;
const NAMES = { dir: "mesh-tunnels-XXXXXX", socket: "outbound.sock" };

export interface TunnelDir {
  inboundPath: string;
  outboundPath: string;
  /** Removes the directory and its sockets. */
  remove(): void;
}

export function openTunnelDir(): TunnelDir {
  // A long TMPDIR would make the sockets' paths too long to bind: /tmp then.
  const base = Buffer.byteLength(join(tmpdir(), NAMES.dir, NAMES.socket)) <= MAX_SOCKET_PATH ? tmpdir() : "/tmp";
  const dir = mkdtempSync(join(base, "mesh-tunnels-"));
  const paths = { inboundPath: join(dir, "inbound.sock"), outboundPath: join(dir, "outbound.sock") };
  const refresh = setInterval(() => {
    const now = new Date();
    for (const p of [dir, paths.inboundPath, paths.outboundPath]) {
      try {
        utimesSync(p, now, now);
      } catch {
        // Gone already: nothing to keep.
      }
    }
  }, REFRESH_EVERY_MS);
  refresh.unref();
  return {
    ...paths,
    remove() {
      clearInterval(refresh);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
