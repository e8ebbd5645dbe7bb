"""`sweep storage-proxy`: one process between many workers and the study's database.

It serves Optuna's gRPC storage proxy (the service of ``optuna.storages.run_grpc_proxy_server``) and
sweep's side service (``sweep.proxy_client``: heartbeats, stale trials, the results table) on
one port, over one pool of database connections per store: however many workers join with
``--storage grpc://host:port``, the database sees at most ``2 * pool`` connections from it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import optuna
from optuna.storages._grpc.auto_generated.api_pb2_grpc import (
    add_StorageServiceServicer_to_server,
)
from optuna.storages._grpc.servicer import OptunaStorageProxyService

from sweep.proxy_client import SERVICE, decode, encode
from sweep.results import SqlResults
from sweep.storage import StorageError, display, heartbeat_ages, is_proxy_url, make_storage

DEFAULT_PORT = 13000
DEFAULT_POOL = 8  # connections of each store; requests beyond wait for one


@dataclass(frozen=True)
class ProxyRequest:
    storage: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: any free port (printed)
    pool: int = DEFAULT_POOL
    threads: int = 64  # requests served at once


class RunningProxy:
    """A started proxy: its server, its port, and the stores it holds."""

    def __init__(self, server: grpc.Server, port: int, closers: list[Callable[[], None]]):
        self.server = server
        self.port = port
        self._closers = closers

    def stop(self, grace_s: float = 5.0) -> None:
        self.server.stop(grace_s).wait()
        for close in self._closers:
            close()


def side_handlers(rdb: optuna.storages.RDBStorage, results: SqlResults) -> dict[str, Callable]:
    """The side service's methods, each on one JSON argument."""
    return {
        "record_heartbeat": rdb.record_heartbeat,
        "stale_trials": rdb._get_stale_trial_ids,
        "heartbeat_ages": lambda study_id: heartbeat_ages(rdb, study_id),
        "results_insert": results.insert,
        "results_get": results.get,
        "results_swap": lambda a: results.swap(a["key"], a["owner"], a["heartbeat"], a["values"]),
        "results_update_owned": lambda a: results.update_owned(a["key"], a["owner"], a["values"]),
        "results_rows": lambda _: results.rows(),
    }


def _generic_handler(methods: dict[str, Callable[[Any], Any]]) -> grpc.GenericRpcHandler:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            lambda message, context, fn=fn: fn(message["value"]),
            request_deserializer=decode,
            response_serializer=encode,
        )
        for name, fn in methods.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def start_proxy(request: ProxyRequest) -> RunningProxy:
    """Start serving; returns once the port is bound."""
    if is_proxy_url(request.storage):
        raise StorageError("the proxy serves a database: give its SQLAlchemy URL, not grpc://")
    rdb = make_storage(request.storage, heartbeat=True, pool=request.pool)
    assert isinstance(rdb, optuna.storages.RDBStorage)
    results = SqlResults(request.storage, pool=request.pool)
    cached = optuna.storages.get_storage(rdb)  # Optuna's cache in front of the database
    # no SO_REUSEPORT: a second proxy on a taken port is refused, not given half the workers
    options = [("grpc.so_reuseport", 0)]
    server = grpc.server(ThreadPoolExecutor(request.threads), options=options)
    add_StorageServiceServicer_to_server(OptunaStorageProxyService(cached), server)
    server.add_generic_rpc_handlers((_generic_handler(side_handlers(rdb, results)),))
    try:
        port = server.add_insecure_port(f"{request.host}:{request.port}")
    except RuntimeError:
        port = 0
    closers = [results.close, rdb.engine.dispose]
    if port == 0:
        for close in closers:
            close()
        raise StorageError(
            f"cannot listen on {request.host}:{request.port}: the port is taken or the address "
            "is not this machine's (--port 0 takes a free one)"
        )
    server.start()
    return RunningProxy(server, port, closers)


def describe(request: ProxyRequest, port: int) -> str:
    return (
        f"storage proxy for {display(request.storage)} on grpc://{request.host}:{port} "
        f"({request.pool} + {request.pool} database connections at most)"
    )
