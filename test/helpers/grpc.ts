/**
 * A real gRPC service and client (@grpc/grpc-js) for tests: a Greeter with unary,
 * server-streaming, client-streaming and failing methods, messages as JSON (no protobuf
 * compiler needed; the wire is gRPC's all the same).
 */
import * as grpc from "@grpc/grpc-js";

const json = {
  serialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()),
};

function method(name: string, requestStream: boolean, responseStream: boolean) {
  return { path: `/mesh.test.Greeter/${name}`, requestStream, responseStream, requestSerialize: json.serialize, requestDeserialize: json.deserialize, responseSerialize: json.serialize, responseDeserialize: json.deserialize, originalName: name };
}

export const GREETER = {
  hello: method("Hello", false, false),
  count: method("Count", false, true),
  collect: method("Collect", true, false),
  fail: method("Fail", false, false),
  slow: method("Slow", false, false),
  tick: method("Tick", false, true),
} satisfies grpc.ServiceDefinition;

export interface Greeting {
  message: string;
  caller: string | null;
  authority: string | null;
  forged: string | null;
}

export interface GreeterService {
  port: number;
  /** Calls of Slow that ended because their client cancelled (or its deadline passed). */
  cancelled: number;
  /** Every call's metadata, in order. */
  calls: grpc.Metadata[];
  stop(): Promise<void>;
}

const first = (md: grpc.Metadata, key: string): string | null => (md.get(key)[0] as string | undefined) ?? null;

/** `unavailable`: every Hello ends UNAVAILABLE, as a server that is failing would answer, and every Count after its first message. */
export async function greeterService(opts: { unavailable?: boolean } = {}): Promise<GreeterService> {
  const server = new grpc.Server();
  const svc: GreeterService = { port: 0, cancelled: 0, calls: [], stop: () => new Promise((r) => server.tryShutdown(() => r())) };
  server.addService(GREETER, {
    hello: (call: grpc.ServerUnaryCall<{ name: string }, Greeting>, cb: grpc.sendUnaryData<Greeting>) => {
      svc.calls.push(call.metadata);
      if (opts.unavailable) return cb({ code: grpc.status.UNAVAILABLE, details: "failing" });
      cb(null, { message: `hello ${call.request.name}`, caller: first(call.metadata, "x-mesh-client-id"), authority: call.getHost(), forged: first(call.metadata, "l5d-client-id") });
    },
    count: (call: grpc.ServerWritableStream<{ to: number }, { n: number }>) => {
      svc.calls.push(call.metadata);
      if (opts.unavailable) {
        call.write({ n: 1 });
        // grpc-js ends a server stream with an error status when the handler emits one.
        return void call.emit("error", { code: grpc.status.UNAVAILABLE, details: "failing" });
      }
      for (let n = 1; n <= call.request.to; n++) call.write({ n });
      call.end();
    },
    collect: (call: grpc.ServerReadableStream<{ n: number }, { sum: number; count: number }>, cb: grpc.sendUnaryData<{ sum: number; count: number }>) => {
      svc.calls.push(call.metadata);
      let sum = 0;
      let count = 0;
      call.on("data", (m: { n: number }) => {
        sum += m.n;
        count++;
      });
      call.on("end", () => cb(null, { sum, count }));
    },
    fail: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      svc.calls.push(call.metadata);
      const trailer = new grpc.Metadata();
      trailer.set("x-reason", "gone");
      cb({ code: grpc.status.NOT_FOUND, details: "no such greeting: é", metadata: trailer });
    },
    tick: (call: grpc.ServerWritableStream<{ times: number; everyMs: number }, { n: number }>) => {
      svc.calls.push(call.metadata);
      let n = 0;
      const timer = setInterval(() => {
        call.write({ n: ++n });
        if (n < call.request.times) return;
        clearInterval(timer);
        call.end();
      }, call.request.everyMs);
      call.on("cancelled", () => clearInterval(timer));
    },
    slow: (call: grpc.ServerUnaryCall<{ ms?: number }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      svc.calls.push(call.metadata);
      const timer = setTimeout(() => cb(null, { waited: call.request.ms ?? 30_000 }), call.request.ms ?? 30_000);
      call.on("cancelled", () => {
        clearTimeout(timer);
        svc.cancelled++;
      });
    },
  });
  svc.port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
  return svc;
}

export type GreeterClient = grpc.Client & Record<keyof typeof GREETER, (...args: any[]) => any>;

/**
 * A client of the service `authority`, through the sidecar's outbound listener (h2c, prior
 * knowledge); or, with `target`, a client of that target as grpc-js dials it (through
 * `http_proxy` when set).
 */
export function greeterClient(outboundPort: number, authority: string, target = `127.0.0.1:${outboundPort}`, options: grpc.ChannelOptions = {}): GreeterClient {
  const Client = grpc.makeGenericClientConstructor(GREETER, "Greeter");
  return new Client(target, grpc.credentials.createInsecure(), { "grpc.default_authority": authority, ...options }) as unknown as GreeterClient;
}

export interface CallResult<T> {
  value?: T;
  error?: grpc.ServiceError;
}

/** A unary call's outcome, value or error, never thrown. */
export function unary<T>(client: GreeterClient, name: "hello" | "fail" | "slow", request: unknown, metadata = new grpc.Metadata(), options: grpc.CallOptions = {}): Promise<CallResult<T>> {
  return new Promise((resolve) => client[name](request, metadata, options, (error: grpc.ServiceError | null, value: T) => resolve(error ? { error } : { value })));
}

export { grpc };
