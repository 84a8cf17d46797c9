/**
 * A gRPC client as a service would run it under `mesh run`: it dials TARGET (e.g.
 * greeter:50051) and grpc-js reaches it through `http_proxy`, which mesh run set to the
 * sidecar. Prints the reply (or the error) as one JSON line; exits 0 on success.
 *   bun grpc-call.ts TARGET NAME
 */
import { greeterClient, unary, type Greeting } from "./grpc.ts";

const [target, name] = process.argv.slice(2);
const client = greeterClient(0, target!, target!);
const r = await unary<Greeting>(client, "hello", { name });
client.close();
console.log(JSON.stringify(r.value ?? { error: r.error?.code, details: r.error?.details }));
process.exit(r.value ? 0 : 1);
