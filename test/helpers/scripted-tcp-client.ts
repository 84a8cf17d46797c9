/**
 * A scripted TCP client, as its own process (run in a network
 * namespace): `scripted-tcp-client.ts PLAN` (JSON) connects to PLAN.host:PLAN.port, takes its
 * steps in order (sleep, write text, write a generated pattern of N bytes), half-closes if
 * asked, and reads until the connection closes, `until` appears in what it read (then holds
 * the connection `holdMs` more and ends it), or `waitMs` passes. With `parallel` N it does
 * this over N connections at once ("{i}" in a text is the connection's index).
 * Prints {results: [{connected, text, bytes, hash, ended, error, ms}]} as JSON, where
 * `ended` is how the connection ended: "end" (the peer's FIN), "close", "error", "until"
 * or "timeout" (still open at waitMs).
 */
import type { Socket } from "bun";

export interface Step {
  sleepMs?: number;
  text?: string;
  /** N bytes: 0x16 first (no HTTP method), then (k * 7 + 3) & 0xff. */
  pattern?: number;
}
export interface Plan {
  host: string;
  port: number;
  steps: Step[];
  halfClose?: boolean;
  waitMs: number;
  until?: string;
  holdMs?: number;
  parallel?: number;
}
export interface Result {
  connected: boolean;
  text: string;
  bytes: number;
  hash: string;
  ended: string;
  error?: string;
  ms: number;
}

function pattern(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let k = 0; k < n; k++) out[k] = k === 0 ? 0x16 : (k * 7 + 3) & 0xff;
  return out;
}

const plan = JSON.parse(process.argv[2]!) as Plan;

async function one(i: number): Promise<Result> {
  const started = Date.now();
  const chunks: Buffer[] = [];
  let ended: string | undefined;
  let error: string | undefined;
  let finished!: () => void;
  const done = new Promise<void>((resolve) => (finished = resolve));
  const queue: Uint8Array[] = [];
  let drained: (() => void) | undefined;
  const finish = (how: string) => {
    ended ??= how;
    finished();
  };
  let sock: Socket<undefined>;
  try {
    sock = await Bun.connect<undefined>({
      hostname: plan.host,
      port: plan.port,
      allowHalfOpen: true,
      socket: {
        data: (_s, chunk) => {
          chunks.push(Buffer.from(chunk));
          if (plan.until !== undefined && Buffer.concat(chunks).toString("latin1").includes(plan.until)) finish("until");
        },
        drain: (s) => {
          while (queue.length > 0) {
            const n = s.write(queue[0]!);
            if (n < queue[0]!.byteLength) {
              queue[0] = queue[0]!.subarray(Math.max(n, 0));
              return;
            }
            queue.shift();
          }
          drained?.();
        },
        end: () => finish("end"),
        error: (_s, err) => {
          error ??= err.message;
          finish("error");
        },
        close: (_s, err) => {
          if (err) error ??= err.message;
          finish(err ? "error" : "close");
        },
      },
    });
  } catch (err) {
    return { connected: false, text: "", bytes: 0, hash: "", ended: "error", error: (err as Error).message, ms: Date.now() - started };
  }
  sock.setNoDelay(true);
  const write = async (bytes: Uint8Array) => {
    queue.push(bytes);
    while (queue.length > 0) {
      const n = sock.write(queue[0]!);
      if (n < queue[0]!.byteLength) {
        queue[0] = queue[0]!.subarray(Math.max(n, 0));
        await Promise.race([new Promise<void>((r) => (drained = r)), done]);
        if (ended !== undefined) return;
        continue;
      }
      queue.shift();
    }
  };
  const timer = setTimeout(() => finish("timeout"), plan.waitMs);
  for (const step of plan.steps) {
    if (ended !== undefined) break;
    if (step.sleepMs) await Promise.race([Bun.sleep(step.sleepMs), done]);
    if (ended !== undefined) break;
    if (step.text !== undefined) await write(new TextEncoder().encode(step.text.replaceAll("{i}", String(i))));
    if (step.pattern !== undefined) await write(pattern(step.pattern));
  }
  if (plan.halfClose && ended === undefined) sock.shutdown();
  await done;
  const ms = Date.now() - started;
  clearTimeout(timer);
  if (ended === "until" && plan.holdMs) await Bun.sleep(plan.holdMs);
  sock.end();
  const all = Buffer.concat(chunks);
  return { connected: true, text: all.toString("latin1").slice(0, 8192), bytes: all.byteLength, hash: String(Bun.hash(all)), ended: ended!, error, ms };
}

const results = await Promise.all(Array.from({ length: plan.parallel ?? 1 }, (_, i) => one(i)));
console.log(JSON.stringify({ results }));
process.exit(0);
