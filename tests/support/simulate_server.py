"""A small HTTP service for `lameduck simulate`'s tests, written the plain Python way
(http.server, one thread per connection, keep-alive). What it does after SIGTERM is the
first argument:

  graceful  readiness answers 503, traffic is still served, exit 0 after DRAIN_S
  5xx       traffic answers 500, exit 0 after DRAIN_S
  hang      traffic requests get no answer (the handler waits), exit 0 after DRAIN_S
  reset     traffic requests are read and their connection reset, exit 0 after DRAIN_S
  ignore    SIGTERM is ignored; it serves until killed

Usage: simulate_server.py MODE PORT [DRAIN_S]. GET /ready is readiness, GET /live
liveness, anything else traffic.
"""

import os
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[1]
PORT = int(sys.argv[2])
DRAIN_S = float(sys.argv[3]) if len(sys.argv) > 3 else 1.5
stopping = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"ok\n"):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/live":
            return self.answer(200)
        if self.path == "/ready":
            return self.answer(503 if stopping.is_set() and MODE == "graceful" else 200)
        if stopping.is_set():
            if MODE == "5xx":
                return self.answer(500, b"stopping\n")
            if MODE == "hang":
                time.sleep(3600)
            if MODE == "reset":
                # SO_LINGER 0: close sends a reset, the request unanswered.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()
                return
        return self.answer(200, b"hello\n")


def on_sigterm(_signum, _frame):
    stopping.set()
    threading.Timer(DRAIN_S, lambda: os._exit(0)).start()


ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
if MODE == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_sigterm)
print(f"serving on {PORT} in mode {MODE}", flush=True)
server.serve_forever()
