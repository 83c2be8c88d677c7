"""Serve moto (the AWS emulator) on loopback, single-threaded.

moto's own `moto_server` is threaded, and its TransactWriteItems is not atomic
across threads: concurrent conditional transactions on one key can all win.
A concurrency test against it would measure moto's race, not ours. Served on
one thread, every request is applied whole before the next starts.

Usage: python moto_server.py [--port N]   (0 = pick a free port)
Prints "listening on http://127.0.0.1:PORT" once ready, and exits when the
process that started it exits (so a test run never leaks a server).
"""

import argparse
import os
import socket
import sys
import threading
import time

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    app = DomainDispatcherApplication(create_backend_app)
    # threaded=False: one request at a time (see the module docstring).
    server = make_server(args.host, args.port, app, threaded=False)
    port = server.socket.getsockname()[1]
    print(f"listening on http://{args.host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
