"""A tiny HTTP service: answers with its version and one setting."""

import os
from http.server import BaseHTTPRequestHandler, HTTPServer

VERSION = "1"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = f"hello v{VERSION} greeting={os.environ.get('GREETING', 'hi')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
