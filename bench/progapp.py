"""A program beside the web app in the several-programs benchmark: ``python progapp.py NAME PORT``.

Serves ``GET /`` on ``127.0.0.1:PORT`` with ``{"name": NAME, "pid": ...}`` (readiness, and which
process answers) and exits 0 on SIGTERM, as a queue consumer or a scheduler with a health port would.
"""

import http.server
import json
import os
import signal
import sys
import threading


def main() -> int:
    name, port = sys.argv[1], int(sys.argv[2])
    body = json.dumps({"name": name, "pid": os.getpid()}).encode()

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet: no line per request
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Health)
    server.allow_reuse_address = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"{name}: serving on {port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
