#!/usr/bin/env python3
"""The revision app of the `sluice up` end-to-end tests: a tiny HTTP/1.1 server on
127.0.0.1:$PORT answering `GET /` with `Hello {TARGET}! from {K_REVISION}` and the header
`x-revision: {K_REVISION}`, and `GET /healthz` with 200.

`GET /?sleep=MS` answers after MS milliseconds, `GET /?burn=MS` after spinning the CPU for MS
milliseconds; `GET /max-in-flight` answers with the most `/` requests it ever served at once
(to check containerConcurrency); `GET /max-in-flight?reset` answers the same and starts counting
again from the requests in flight now; `GET /traceparent` answers with the request's W3C
`traceparent` header (empty without one). Every answer carries `x-reserved` (the value of
SLUICE_RESERVED_INSTANCE, empty for a standard instance), `x-args` (its arguments) and
`x-nice` (its CPU niceness).

CRASH_AFTER=N makes it exit with status 3 after answering N requests to `/` (to watch the
runtime restart it). SLOW_START_MS delays listening (to watch requests wait for a start).
"""
import http.server
import os
import sys
import threading
import time

PORT = int(os.environ.get("PORT", "8080"))
REVISION = os.environ.get("K_REVISION", "")
TARGET = os.environ.get("TARGET", "World")
CRASH_AFTER = int(os.environ.get("CRASH_AFTER", "0"))
SLOW_START_MS = int(os.environ.get("SLOW_START_MS", "0"))
RESERVED = os.environ.get("SLUICE_RESERVED_INSTANCE", "")

lock = threading.Lock()
answered = 0
in_flight = 0
max_in_flight = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        global answered, in_flight, max_in_flight
        if self.path == "/healthz":
            self.reply(b"ok\n")
            return
        if self.path == "/max-in-flight":
            self.reply(f"{max_in_flight}\n".encode())
            return
        if self.path == "/traceparent":
            self.reply(f"{self.headers.get('traceparent', '')}\n".encode())
            return
        if self.path == "/max-in-flight?reset":
            with lock:
                seen, max_in_flight = max_in_flight, in_flight
            self.reply(f"{seen}\n".encode())
            return
        with lock:
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
        try:
            query = self.path.partition("?")[2]
            for pair in query.split("&"):
                key, _, value = pair.partition("=")
                if key == "sleep" and value.isdigit():
                    time.sleep(int(value) / 1000)
                if key == "burn" and value.isdigit():
                    until = time.monotonic() + int(value) / 1000
                    while time.monotonic() < until:
                        pass
        finally:
            with lock:
                in_flight -= 1
        self.reply(f"Hello {TARGET}! from {REVISION}\n".encode())
        with lock:
            answered += 1
            if CRASH_AFTER and answered >= CRASH_AFTER:
                sys.stdout.write(f"crashing after {answered} requests\n")
                sys.stdout.flush()
                os._exit(3)

    def reply(self, body):
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-revision", REVISION)
        self.send_header("x-reserved", RESERVED)
        self.send_header("x-args", " ".join(sys.argv[1:]))
        self.send_header("x-nice", str(os.nice(0)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args):
        pass


if SLOW_START_MS:
    time.sleep(SLOW_START_MS / 1000)
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # A burst of connections at once (the activator waking it) must not overflow the
    # listen backlog (socketserver's default is 5).
    request_queue_size = 1024


server = Server(("127.0.0.1", PORT), Handler)
print(f"{REVISION} listening on 127.0.0.1:{PORT}", flush=True)
server.serve_forever()
