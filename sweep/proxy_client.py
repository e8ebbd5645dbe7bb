"""Workers that reach their study through ``sweep storage-proxy`` (a ``grpc://host:port`` URL)
instead of a connection of their own to the database.

Optuna's ``GrpcStorageProxy`` carries the study and its trials. What sweep keeps beside them
goes through a second gRPC service of the same server, ``sweep.Side``: Optuna's trial
heartbeats (its proxy has none, so a dead worker's trial would never be failed), the stale
trials to fail, and the rows of the results table (``sweep.results``). Its messages are JSON,
``{"value": ...}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc
import optuna
from optuna.storages import GrpcStorageProxy
from optuna.storages._grpc.auto_generated import api_pb2_grpc
from optuna.storages._grpc.client import GrpcClientCache
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial

from sweep.storage import HEARTBEAT_S, StorageError

SERVICE = "sweep.Side"
CONNECT_TIMEOUT_S = 15.0
# A call waits this long for an unreachable proxy (restarted, moved) before it fails: a proxy
# back within it costs the workers a pause, not their trials.
PROXY_WAIT_S = 300
_ADDRESS = re.compile(r"^grpc://(?P<host>\[[0-9a-fA-F:]+\]|[\w.-]+):(?P<port>\d{1,5})/?$")
_DATETIME = "__datetime__"


def proxy_address(url: str) -> tuple[str, int]:
    """The host and port of a ``grpc://host:port`` URL; a clear error for anything else."""
    match = _ADDRESS.match(url)
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise StorageError(
            f"storage {url!r} is not a storage proxy's address: give grpc://HOST:PORT, as "
            "`sweep storage-proxy` prints it (grpc://127.0.0.1:13000)"
        )
    return match["host"].strip("[]"), port


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    raise TypeError(f"{type(value).__name__} does not go through the storage proxy")


def _hook(obj: dict[str, Any]) -> Any:
    return datetime.fromisoformat(obj[_DATETIME]) if _DATETIME in obj else obj


def encode(value: Any) -> bytes:
    return json.dumps({"value": value}, default=_default).encode()


def decode(data: bytes) -> dict[str, Any]:
    """The message as ``{"value": ...}``: gRPC takes a deserializer's None for a failure."""
    return json.loads(data, object_hook=_hook)


def proxy_channel(host: str, port: int, wait_s: float = PROXY_WAIT_S) -> grpc.Channel:
    """A channel to the proxy on which every call, Optuna's and sweep's, waits up to ``wait_s``
    for the proxy to be reachable instead of failing at once."""
    config = {"methodConfig": [{"name": [{}], "waitForReady": True, "timeout": f"{wait_s:g}s"}]}
    options = [("grpc.max_receive_message_length", -1), ("grpc.service_config", json.dumps(config))]
    return grpc.insecure_channel(f"{host}:{port}", options=options)


def _detail(err: grpc.RpcError) -> str:
    return err.details() if hasattr(err, "details") else str(err)  # type: ignore[attr-defined]


def lost_proxy(err: BaseException) -> str | None:
    """What to tell the user when ``err`` (or an error it arose from) is a failed call to the
    proxy; None for other errors."""
    seen: BaseException | None = err
    while seen is not None and not isinstance(seen, grpc.RpcError):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    return (
        f"lost the storage proxy ({_detail(seen)}); this worker stops. Its running trial is "
        "failed and queued again once a worker reaches the proxy; start it again and rerun the "
        "worker"
    )


class SideChannel:
    """Calls to the proxy's ``sweep.Side`` service."""

    def __init__(self, host: str, port: int, wait_s: float = PROXY_WAIT_S) -> None:
        self.where = f"{host}:{port}"
        self.channel = proxy_channel(host, port, wait_s)
        self._methods: dict[str, Callable[..., Any]] = {}

    def call(self, method: str, argument: Any = None) -> Any:
        if method not in self._methods:
            self._methods[method] = self.channel.unary_unary(
                f"/{SERVICE}/{method}", request_serializer=encode, response_deserializer=decode
            )
        try:
            return self._methods[method](argument)["value"]
        except grpc.RpcError as err:
            raise StorageError(f"storage proxy at {self.where}: {method}: {_detail(err)}") from None

    def close(self) -> None:
        self.channel.close()


class ProxyStorage(GrpcStorageProxy, BaseHeartbeat):
    """Optuna's gRPC storage client, with the heartbeats of sweep's side service: a worker's
    trials beat every ``HEARTBEAT_S`` seconds, and stale ones are failed and retried, as on a
    database."""

    def __init__(
        self,
        url: str,
        heartbeat: bool = True,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        wait_s: float = PROXY_WAIT_S,
    ) -> None:
        host, port = proxy_address(url)
        self.wait_s = wait_s
        super().__init__(host=host, port=port)
        try:
            self.wait_server_ready(timeout=connect_timeout_s)
        except ConnectionError:
            raise StorageError(
                f"no storage proxy answers at {host}:{port} (after {connect_timeout_s:.0f} s): "
                "start one with `sweep storage-proxy --storage URL`"
            ) from None
        self.side = SideChannel(host, port, wait_s)
        self._heartbeat = heartbeat
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
        self._callback = retry if heartbeat else None

    def _setup(self) -> None:
        super()._setup()
        self._channel.close()  # Optuna's, replaced by one whose calls wait for the proxy
        self._channel = proxy_channel(self._host, self._port, self.wait_s)
        self._stub = api_pb2_grpc.StorageServiceStub(self._channel)
        self._cache = GrpcClientCache(self._stub)

    def record_heartbeat(self, trial_id: int) -> None:
        self.side.call("record_heartbeat", trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return list(self.side.call("stale_trials", study_id))

    def get_heartbeat_interval(self) -> int | None:
        return HEARTBEAT_S if self._heartbeat else None

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._callback

    def heartbeat_ages(self, study_id: int) -> dict[int, float]:
        """Seconds since each running trial's last beat, on the database's clock."""
        return {int(n): age for n, age in self.side.call("heartbeat_ages", study_id).items()}


class GrpcResults:
    """The rows of ``sweep_results`` through the proxy (``sweep.results.SqlResults``'s
    operations, run by the proxy on its own pool of connections)."""

    def __init__(self, url: str) -> None:
        self.side = SideChannel(*proxy_address(url))

    def insert(self, values: dict[str, Any]) -> bool:
        return bool(self.side.call("results_insert", values))

    def get(self, key: str) -> dict[str, Any] | None:
        return self.side.call("results_get", key)

    def swap(self, key: str, owner: str, heartbeat: datetime, values: dict[str, Any]) -> bool:
        argument = {"key": key, "owner": owner, "heartbeat": heartbeat, "values": values}
        return bool(self.side.call("results_swap", argument))

    def update_owned(self, key: str, owner: str, values: dict[str, Any]) -> None:
        self.side.call("results_update_owned", {"key": key, "owner": owner, "values": values})

    def rows(self) -> list[dict[str, Any]]:
        return list(self.side.call("results_rows"))

    def close(self) -> None:
        self.side.close()
