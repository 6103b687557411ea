# web: a tiny HTTP service for the meshd examples (Python standard library
# only). It calls payments in a loop and prints, every 5 seconds, how the
# calls ended: the status code and, when meshd answered by itself, its
# x-meshd-error reason (circuit-open, no-healthy-upstream, ...). GET / on
# its own port makes one call and returns payments' answer.
import collections
import http.server
import os
import threading
import time
import urllib.error
import urllib.request

UPSTREAM = os.environ.get("PAYMENTS_URL", "http://payments:8080/")
INTERVAL = float(os.environ.get("INTERVAL", "0.1"))
PORT = int(os.environ.get("PORT", "8080"))


def call():
    try:
        with urllib.request.urlopen(UPSTREAM, timeout=5) as r:
            return r.status, r.read().decode().strip(), ""
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode().strip(), e.headers.get("x-meshd-error", "")
    except Exception as e:
        return 0, f"error: {e}", ""


def load():
    counts = collections.Counter()
    last = time.monotonic()
    while True:
        code, _, why = call()
        counts[f"{code} {why}".strip()] += 1
        if time.monotonic() - last >= 5:
            summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
            print(f"web -> payments, last 5s: {summary}", flush=True)
            counts.clear()
            last = time.monotonic()
        time.sleep(INTERVAL)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        code, body, why = call()
        data = f"web -> {body}\n".encode()
        self.send_response(code or 502)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        if why:
            self.send_header("x-meshd-error", why)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


threading.Thread(target=load, daemon=True).start()
print(f"web on :{PORT}, calling {UPSTREAM}", flush=True)
http.server.ThreadingHTTPServer(("", PORT), Handler).serve_forever()
