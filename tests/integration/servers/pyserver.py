"""A small HTTP/1.1 test server (python3's http.server), run under ddshim-run
by the integration tests. Usage: pyserver.py READY_FILE [threading|forking]

  GET /                 -> 200 "ok\n"
  GET /status/NNN       -> NNN
  GET /call?url=U[&url=U2] -> fetches each U with urllib, answers their bodies
  anything else         -> 404
"""
import http.server
import os
import signal
import socketserver
import sys
import urllib.parse
import urllib.request


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/":
            return self.reply(200, b"ok\n")
        if u.path.startswith("/status/"):
            return self.reply(int(u.path.split("/")[2]), b"status\n")
        if u.path == "/call":
            out = b""
            for target in urllib.parse.parse_qs(u.query).get("url", []):
                out += urllib.request.urlopen(target).read()
            return self.reply(200, out)
        return self.reply(404, b"not found\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        self.reply(200, b"got %d\n" % len(body))

    do_HEAD = do_GET


class Forking(socketserver.ForkingMixIn, http.server.HTTPServer):
    pass


def main():
    ready, kind = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "threading")
    cls = Forking if kind == "forking" else http.server.ThreadingHTTPServer
    # SIGTERM and SIGINT end the process normally (exit handlers run, so
    # ddshim's exit flush does too), even where a shell started it with
    # SIGINT ignored.
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *a: sys.exit(0))
    srv = cls(("127.0.0.1", 0), Handler)
    with open(ready + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(ready + ".tmp", ready)
    try:
        srv.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
