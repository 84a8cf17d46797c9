/**
 * Where the servers behind the listeners' tunnels (WebSocket upgrades, HTTP/2) listen: Unix sockets in a
 * directory made for this sidecar (mode 0700), so only its user's processes can connect,
 * and removed when it drains. Age-based cleaners of /tmp (systemd-tmpfiles removes what
 * has not changed for 10 days on some distributions) would take the sockets from a
 * long-running sidecar, so their times are refreshed every hour. The directory's name
 * holds the sidecar's pid: one left by a sidecar that did not drain (killed, crashed) is
 * removed by the next to start, once no process has that pid.
 */
import { mkdtempSync, readdirSync, rmSync, statSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const REFRESH_EVERY_MS = 3_600_000;
/** A Unix socket's path fits in 108 bytes (sun_path), its terminating NUL included. */
const MAX_SOCKET_PATH = 107;
const PREFIX = "mesh-tunnels-";
/** The longest socket name: what the path-length check measures. */
const NAMES = { dir: `${PREFIX}4194304-XXXXXX`, socket: "outbound-h2.sock" };
const LEFT_BY = /^mesh-tunnels-(\d+)-/;

/** Directories of sidecars of this user that are gone. */
function removeLeftovers(base: string): void {
  let names: string[];
  try {
    names = readdirSync(base);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(LEFT_BY.exec(name)?.[1]);
    if (!pid || pid === process.pid || alive(pid)) continue;
    const path = join(base, name);
    try {
      if (statSync(path).uid === process.getuid?.()) rmSync(path, { recursive: true, force: true });
    } catch {
      // Removed meanwhile, or not ours to remove.
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === "EPERM";
  }
}

export interface TunnelDir {
  inboundPath: string;
  outboundPath: string;
  /** Removes the directory and its sockets. */
  remove(): void;
}

export function openTunnelDir(): TunnelDir {
  // A long TMPDIR would make the sockets' paths too long to bind: /tmp then.
  const base = Buffer.byteLength(join(tmpdir(), NAMES.dir, NAMES.socket)) <= MAX_SOCKET_PATH ? tmpdir() : "/tmp";
  removeLeftovers(base);
  const dir = mkdtempSync(join(base, `${PREFIX}${process.pid}-`));
  const paths = { inboundPath: join(dir, "inbound.sock"), outboundPath: join(dir, "outbound.sock") };
  const refresh = setInterval(() => {
    const now = new Date();
    for (const p of [dir, ...Object.values(paths)]) {
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
