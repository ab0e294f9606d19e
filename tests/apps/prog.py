"""A small program for the several-programs tests: ``python prog.py MODE NAME [ARG]``.

Every mode prints ``NAME: started pid N`` first, so tests can see the start order.

* ``serve``: run until SIGTERM, then print ``NAME: stopping`` and exit 0;
* ``once``: print ``NAME: done`` and exit with ARG (default 0);
* ``crash``: exit 1 after ARG seconds;
* ``stubborn``: ignore SIGTERM;
* ``late-log``: print ``NAME: ready now`` after ARG seconds, then serve;
* ``http``: serve ``GET /health`` on ``$PORT`` (200), after ARG seconds.
"""

from __future__ import annotations

import http.server
import os
import signal
import sys
import threading
import time


def serve_forever(name: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    print(f"{name}: stopping", flush=True)


def main() -> int:
    mode, name = sys.argv[1], sys.argv[2]
    arg = sys.argv[3] if len(sys.argv) > 3 else ""
    print(f"{name}: started pid {os.getpid()}", flush=True)
    if mode == "once":
        print(f"{name}: done", flush=True)
        if arg and arg != "0":
            print(f"{name}: failing on purpose with {arg}", file=sys.stderr, flush=True)
        return int(arg or 0)
    if mode == "crash":
        time.sleep(float(arg or 0))
        print(f"{name}: crashing", file=sys.stderr, flush=True)
        return 1
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    if mode == "late-log":
        time.sleep(float(arg or 0))
        print(f"{name}: ready now", flush=True)
    if mode == "http":
        time.sleep(float(arg or 0))

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the stdlib's name
                self.send_response(200 if self.path == "/health" else 404)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"{name}: listening on {os.environ['PORT']}", flush=True)
    serve_forever(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
