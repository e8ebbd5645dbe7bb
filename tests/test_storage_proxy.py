"""`sweep storage-proxy`: Optuna's gRPC storage proxy with sweep's side service. Workers on a
``grpc://`` URL keep what they have on a database: heartbeats, stale trials failed and retried,
the results table (tests/test_results.py runs its tests through the proxy too), and a clear
error when no proxy answers."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import optuna
import pytest
import sqlalchemy as sa
from optuna.storages._rdb import models
from optuna.trial import TrialState

from sweep.proxy_client import ProxyStorage, lost_proxy, proxy_address
from sweep.status import heartbeat_ages
from sweep.storage import GRACE_S, StorageError, check_url, make_storage
from sweep.storage_proxy import ProxyRequest, start_proxy

from .helpers import SWEEP, env


@pytest.fixture
def proxied(tmp_path: Path):
    """(the proxy's URL, the database's URL) of a proxy on a SQLite file."""
    database = f"sqlite:///{tmp_path / 'study.db'}"
    proxy = start_proxy(ProxyRequest(database, port=0))
    yield f"grpc://127.0.0.1:{proxy.port}", database
    proxy.stop()


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("grpc://127.0.0.1:13000", ("127.0.0.1", 13000)),
        ("grpc://node-7.cluster:80/", ("node-7.cluster", 80)),
        ("grpc://[::1]:9", ("::1", 9)),
    ],
)
def test_a_proxy_url_names_host_and_port(url, address):
    assert proxy_address(url) == address
    check_url(url)


@pytest.mark.parametrize("url", ["grpc://host", "grpc://host:0", "grpc://host:70000", "grpc://:80"])
def test_a_proxy_url_without_a_usable_port_is_refused(url):
    with pytest.raises(StorageError, match=r"grpc://HOST:PORT"):
        check_url(url)


def test_no_proxy_at_the_address_is_a_clear_error():
    start = time.monotonic()
    with pytest.raises(
        StorageError, match="no storage proxy answers at 127.0.0.1:9.*storage-proxy"
    ):
        ProxyStorage("grpc://127.0.0.1:9", connect_timeout_s=1)
    assert time.monotonic() - start < 10


def test_a_dead_workers_trial_is_failed_and_retried_through_the_proxy(proxied):
    url, database = proxied
    storage = make_storage(url)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)  # what a worker's heartbeat thread does
    ages = heartbeat_ages(study)
    assert list(ages) == [trial.number] and 0 <= ages[trial.number] < GRACE_S
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == TrialState.RUNNING  # beating: alive
    # the worker dies: its last beat ages past the grace period
    engine = sa.create_engine(database)
    with engine.begin() as conn:
        old = datetime.now() - timedelta(seconds=GRACE_S + 60)
        conn.execute(sa.update(models.TrialHeartbeatModel).values(heartbeat=old))
    engine.dispose()
    assert heartbeat_ages(study)[trial.number] > GRACE_S
    optuna.storages.fail_stale_trials(study)  # what every live worker runs every 2 s
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.WAITING]  # failed, and queued again
    assert study.trials[1].system_attrs["failed_trial"] == trial.number


def test_the_command_serves_until_sigterm_and_masks_the_password(tmp_path: Path):
    database = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="served", storage=database)
    proc = subprocess.Popen(
        [*SWEEP, "storage-proxy", "--port", "0"],
        env={**env(), "SWEEP_STORAGE": database}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"storage proxy for {database} on grpc://127.0.0.1:")
        port = int(line.split("grpc://127.0.0.1:")[1].split()[0])
        storage = make_storage(f"grpc://127.0.0.1:{port}", heartbeat=False)
        assert [s.study_name for s in storage.get_all_studies()] == ["served"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "storage proxy stopped (SIGTERM)" in err
    secret = "postgresql+psycopg2://sweep:hunter2@127.0.0.1:1/none"
    refused = subprocess.run(
        [*SWEEP, "storage-proxy", "--storage", secret, "--port", "0"],
        env=env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "cannot open study storage" in refused.stderr
    assert "hunter2" not in refused.stdout + refused.stderr


def test_the_proxy_refuses_to_serve_a_proxy_and_a_taken_port(proxied):
    url, database = proxied
    with pytest.raises(StorageError, match="not grpc://"):
        start_proxy(ProxyRequest(url))
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(StorageError, match=f"cannot listen on 127.0.0.1:{port}"):
        start_proxy(ProxyRequest(database, port=port))


def test_workers_wait_for_a_restarted_proxy_and_say_so_when_it_stays_away(tmp_path: Path):
    database = f"sqlite:///{tmp_path / 'study.db'}"
    proxy = start_proxy(ProxyRequest(database, port=0))
    port = proxy.port
    storage = ProxyStorage(f"grpc://127.0.0.1:{port}", wait_s=60)
    optuna.create_study(study_name="kept", storage=storage)
    impatient = ProxyStorage(f"grpc://127.0.0.1:{port}", wait_s=1)
    proxy.stop()
    restarted: list = []
    timer = threading.Timer(
        2.0, lambda: restarted.append(start_proxy(ProxyRequest(database, port=port)))
    )
    timer.start()
    try:
        with pytest.raises(grpc.RpcError) as lost:  # waits 1 s: the proxy is still away
            impatient.get_all_studies()
        message = lost_proxy(lost.value)
        assert message.startswith("lost the storage proxy") and "queued again" in message
        assert lost_proxy(ValueError("other")) is None
        # a call made while the proxy is down waits for it, instead of failing
        assert [s.study_name for s in storage.get_all_studies()] == ["kept"]
    finally:
        timer.join()
        restarted[0].stop()
