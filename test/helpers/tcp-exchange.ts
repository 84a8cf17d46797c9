/** tcpExchange as its own process (for network namespaces): `tcp-exchange.ts HOST PORT PAYLOAD` prints {text, error} as JSON. */
import { tcpExchange } from "./tcp.ts";

const [host, port, payload] = process.argv.slice(2);
const r = await tcpExchange(Number(port), payload ?? "", { host, timeoutMs: 5000 });
console.log(JSON.stringify({ text: r.text, error: r.error }));
