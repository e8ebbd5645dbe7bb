"""optuna-dashboard on a study's storage, served until Ctrl-C or SIGTERM.

optuna-dashboard's own ``run_server`` serves in the main thread, where an interruption that
lands while a request is handled is caught by wsgiref's handler, which answers 500 and serves on:
a SIGTERM could leave it running. Here the server runs in a thread of its own, and the main
thread only waits, so an interruption always reaches it and shuts the server down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from sweep.errors import UserError


class DashboardError(UserError):
    """The dashboard cannot serve on the address asked for."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per request would bury what the command prints


def serve_dashboard(
    storage: optuna.storages.BaseStorage,
    host: str,
    port: int,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve optuna-dashboard on ``storage`` (an Optuna storage) at ``host:port`` until
    interrupted; ``on_ready(port)`` is called once it listens."""
    from optuna_dashboard import wsgi

    try:
        server: WSGIServer = make_server(host, port, wsgi(storage), handler_class=_QuietHandler)
    except OSError as err:
        raise DashboardError(
            f"cannot serve the dashboard on {host}:{port}: {err.strerror or err}; choose "
            "another --port (or --host)"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    thread.start()
    try:
        if on_ready is not None:
            on_ready(server.server_port)
        while thread.is_alive():
            thread.join(0.5)
    finally:
        server.shutdown()
        server.server_close()
