"""An HTTPS server for canaryd's TLS tests (Python's own ssl and
http.server; nothing to install).

    https_server.py --cert C --key K [--client-ca CA] --dir D

Listens on 127.0.0.1, on a free port it writes to D/port once it accepts
connections. GET /metrics answers D/metrics (the exposition the test wrote,
as Prometheus text). Any POST is appended to D/posts.jsonl as one JSON line
{"path": ..., "body": ...} and answered 200. With --client-ca, a client
must present a certificate signed by that CA (mutual TLS).
"""

import argparse
import http.server
import json
import os
import ssl


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path != "/metrics":
            self.answer(404, b"not found\n", "text/plain")
            return
        with open(os.path.join(self.server.dir, "metrics"), "rb") as f:
            body = f.read()
        self.answer(200, body, "text/plain; version=0.0.4; charset=utf-8")

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length).decode("utf-8")
        with open(os.path.join(self.server.dir, "posts.jsonl"), "a") as f:
            f.write(json.dumps({"path": self.path, "body": body}) + "\n")
        self.answer(200, b"{}", "application/json")

    def answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        with open(os.path.join(self.server.dir, "access.log"), "a") as f:
            f.write((fmt % args) + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--client-ca")
    p.add_argument("--dir", required=True)
    a = p.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(a.cert, a.key)
    if a.client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(a.client_ca)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.dir = a.dir
    server.socket = context.wrap_socket(server.socket, server_side=True)
    port_file = os.path.join(a.dir, "port")
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
