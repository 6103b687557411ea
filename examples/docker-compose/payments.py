# payments: a tiny HTTP service for the meshd examples (Python standard
# library only). It answers "ok" with 200, or 503 for a share FAIL_RATE
# (0 to 1) of the requests, so that one instance can be made faulty.
import http.server
import os
import random
import socket

FAIL_RATE = float(os.environ.get("FAIL_RATE", "0"))
PORT = int(os.environ.get("PORT", "8080"))
HOST = socket.gethostname()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if random.random() < FAIL_RATE:
            code, body = 503, f"payments {HOST}: failing\n"
        else:
            code, body = 200, f"payments {HOST}: ok\n"
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


print(f"payments {HOST} on :{PORT}, FAIL_RATE={FAIL_RATE}", flush=True)
http.server.ThreadingHTTPServer(("", PORT), Handler).serve_forever()
