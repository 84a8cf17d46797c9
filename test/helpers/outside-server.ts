/**
 * A service outside the mesh, as its own process (for network namespaces):
 * `outside-server.ts ADDRESS` answers HTTP on one port ({outside: true, method, path,
 * asked: its Host, caller}); on another it speaks first ("220 outside") and then echoes,
 * as a mail server or a database greets, writing "bye" at the client's FIN; on a third
 * it only echoes, and ends after the echo at the client's FIN. Prints the three ports.
 */
import { tcpEchoService } from "./tcp.ts";

const hostname = process.argv[2] ?? "127.0.0.1";
const http = Bun.serve({
  hostname,
  port: 0,
  fetch: (req) => Response.json({ outside: true, method: req.method, path: new URL(req.url).pathname, asked: req.headers.get("host"), caller: req.headers.get("x-mesh-client-id") }),
});
const greeter = Bun.listen<undefined>({
  hostname,
  port: 0,
  allowHalfOpen: true,
  socket: {
    open: (s) => void s.write("220 outside\r\n"),
    data: (s, chunk) => void s.write(chunk),
    end: (s) => void s.end("bye"),
  },
});
const echo = tcpEchoService({ hostname, farewell: false });
console.log(JSON.stringify({ ready: true, port: http.port, greeterPort: greeter.port, echoPort: echo.port }));
