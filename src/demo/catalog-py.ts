/**
 * The catalog service, in Python (standard library only), to show that the mesh does not
 * care what a service is written in: it answers plain HTTP on loopback and reads the
 * caller's identity from the header its sidecar sets. It prints its port as a JSON line,
 * and exits when its stdin closes, so it never outlives the demo.
 */
export const CATALOG_PY = String.raw`
import json, os, signal, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ITEMS = ["kettle", "teapot", "mug", "saucer", "spoon", "strainer", "tray", "cosy"]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; without this, Nagle holds the body back
    # until the sidecar's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def do_GET(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["healthz"]:
            return self.reply(200, {"ok": True})
        if len(parts) == 2 and parts[0] == "items" and parts[1].isdigit():
            n = int(parts[1])
            return self.reply(200, {"id": n, "name": ITEMS[n % len(ITEMS)], "served_by": "python3",
                                    "caller": self.headers.get("x-mesh-client-id")})
        return self.reply(404, {"error": "no such path"})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)

signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
signal.signal(signal.SIGINT, lambda *_: os._exit(0))
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
print(json.dumps({"ready": True, "port": server.server_address[1]}), flush=True)
server.serve_forever()
`;
