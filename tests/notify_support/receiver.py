#!/usr/bin/env python3
"""A notification receiver for tests/notify_delivery.rs: HTTP, or HTTPS with
a certificate the test generated (Python's ssl). Every request is appended to
--out as one JSON line: path, the canaryd headers, the body as text, the
receive time (Unix ms), and, with --verifier, whether the documented
signature verifier (the code block of docs/notifications.md) accepts it.
GET /files/NAME answers the file NAME of --files (a metrics exposition a
test turns on and off), or 503 while it is absent. Prints the port it
listens on, then serves until killed."""

import argparse
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--out", required=True)
parser.add_argument("--cert")
parser.add_argument("--key")
parser.add_argument("--verifier", help="a Python file defining verify(secret, headers, body, now)")
parser.add_argument("--secret-file")
parser.add_argument("--files", help="the directory GET /files/NAME serves")
args = parser.parse_args()

verify = None
if args.verifier:
    scope = {}
    with open(args.verifier) as f:
        exec(compile(f.read(), args.verifier, "exec"), scope)
    verify = scope["verify"]
secret = open(args.secret_file, "rb").read().strip() if args.secret_file else None
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        record = {
            "path": self.path,
            "received_ms": int(time.time() * 1000),
            "headers": {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-canaryd") or k.lower() == "content-type"},
            "body": body.decode("utf-8"),
        }
        if verify is not None and secret is not None and self.path.startswith("/webhook"):
            record["verified"] = verify(secret, self.headers, body, time.time())
            # A body changed on the way must not verify.
            record["tampered_verified"] = verify(secret, self.headers, body + b" ", time.time())
        with lock:
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_GET(self):
        name = self.path.removeprefix("/files/")
        try:
            with open(f"{args.files}/{name}", "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
        except (OSError, TypeError):
            body = b"switched off\n"
            self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
if args.cert:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
