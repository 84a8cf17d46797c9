/**
 * Proves a topology serves gRPC before it is measured, with a real gRPC client (grpc-js):
 * one unary call naming `payments` as its authority must end with grpc-status 0 and the
 * service's 100-byte message. h2load alone could not tell: it counts HTTP statuses, and a
 * proxy's own gRPC error rides on HTTP 200.
 */
import * as grpc from "@grpc/grpc-js";
import { AUTHORITY, METHOD_PATH, REQUEST_MESSAGE_BYTES, RESPONSE_MESSAGE_BYTES } from "./wire.ts";

const same = (b: Buffer) => b;
/** Messages go through as raw bytes: no protobuf needed for a service that only counts them. */
const Payments = grpc.makeGenericClientConstructor(
  { Charge: { path: METHOD_PATH, requestStream: false, responseStream: false, requestSerialize: same, requestDeserialize: same, responseSerialize: same, responseDeserialize: same } },
  "Payments",
);

type Unary = (req: Buffer, options: grpc.CallOptions, done: (err: grpc.ServiceError | null, res?: Buffer) => void) => void;

/**
 * `calls` calls one after another on one connection; undefined when every one succeeded
 * as expected, else what went wrong. Several calls, because a fault may show only on a
 * reused connection or session (see service.ts on HPACK).
 */
export async function problemWithCall(port: number, calls = 1, timeoutMs = 3000): Promise<string | undefined> {
  const client = new Payments(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { "grpc.default_authority": AUTHORITY });
  try {
    const charge = (client as unknown as { Charge: Unary }).Charge.bind(client);
    for (let i = 1; i <= calls; i++) {
      const res = await new Promise<Buffer>((resolve, reject) =>
        charge(Buffer.alloc(REQUEST_MESSAGE_BYTES, "y"), { deadline: Date.now() + timeoutMs }, (err, body) => (err ? reject(err) : resolve(body!))),
      );
      if (res.byteLength !== RESPONSE_MESSAGE_BYTES) return `call ${i}: message of ${res.byteLength} bytes, expected ${RESPONSE_MESSAGE_BYTES}`;
    }
    return undefined;
  } catch (err) {
    const e = err as grpc.ServiceError;
    const why = e.metadata?.get("x-mesh-error")[0];
    return `grpc-status ${e.code} (${grpc.status[e.code] ?? "?"}): ${e.details}${why ? ` [x-mesh-error: ${why}]` : ""}`;
  } finally {
    client.close();
  }
}

/** Retries until a call succeeds, the deadline passes, or `gone()` says a process died. */
export async function waitUntilServing(port: number, timeoutMs: number, gone: () => string | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "no attempt";
  while (Date.now() < deadline) {
    const dead = gone();
    if (dead) throw new Error(dead);
    const problem = await problemWithCall(port);
    if (!problem) return;
    last = problem;
    await Bun.sleep(100);
  }
  throw new Error(`no successful gRPC call within ${timeoutMs} ms: ${last}`);
}
