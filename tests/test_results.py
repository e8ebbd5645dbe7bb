"""The results table on its own: two tables (two workers) on one SQLite file, each with its own
connection, and the same through the storage proxy. A configuration is claimed once; a waiting
worker gets the result, or takes over a claim whose owner failed or stopped beating."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sweep.results import ResultsTable
from sweep.storage import GRACE_S
from sweep.storage_proxy import ProxyRequest, start_proxy

CONTEXT = {"model": "m"}
RESULT = {"sr": 0.9, "srcr": 2.0}


@pytest.fixture(params=["database", "proxy"])
def url(request, tmp_path: Path):
    """The table's URL: the database's, or a storage proxy's in front of it."""
    database = f"sqlite:///{tmp_path / 'results.db'}"
    if request.param == "database":
        yield database
        return
    proxy = start_proxy(ProxyRequest(database, port=0))
    yield f"grpc://127.0.0.1:{proxy.port}"
    proxy.stop()


def _table(url: str, owner: str, stale_after_s: float = 60.0) -> ResultsTable:
    return ResultsTable(url, stale_after_s=stale_after_s, poll_s=0.02, owner=owner)


def _claim_in_thread(table: ResultsTable, key: str, waits: list[str]):
    out: dict = {}

    def claim() -> None:
        out["claim"] = table.claim(key, "cfg", CONTEXT, "s", 1, on_wait=waits.append)

    thread = threading.Thread(target=claim)
    thread.start()
    return thread, out


def test_the_first_claim_owns_and_a_second_waits_for_its_result(url):
    a, b = _table(url, "a"), _table(url, "b")
    assert a.claim("k", "cfg", CONTEXT, "s", 0).owned
    waits: list[str] = []
    thread, out = _claim_in_thread(b, "k", waits)
    deadline = time.monotonic() + 5
    while not waits and time.monotonic() < deadline:  # b is waiting, and said on whom
        time.sleep(0.01)
    assert waits == ["a"]
    a.finish("k", RESULT)
    thread.join(timeout=5)
    claim = out["claim"]
    assert not claim.owned and claim.result == RESULT
    assert [r["status"] for r in b.rows()] == ["done"]


def test_a_failed_claim_is_taken_over_at_once(url):
    a, b = _table(url, "a"), _table(url, "b")
    assert a.claim("k", "cfg", CONTEXT, "s", 0).owned
    a.fail("k", "RuntimeError: boom")
    assert b.claim("k", "cfg", CONTEXT, "s", 1).owned
    row = b.get("k")
    assert row["owner"] == "b" and row["status"] == "running" and row["reason"] is None


def test_a_claim_whose_owner_stopped_beating_is_taken_over_and_the_owner_cannot_overwrite(url):
    a, b = _table(url, "a"), _table(url, "b", stale_after_s=0.3)
    start = time.monotonic()  # before a's heartbeat, which the staleness is counted from
    assert a.claim("k", "cfg", CONTEXT, "s", 0).owned
    assert b.claim("k", "cfg", CONTEXT, "s", 1).owned  # a never beats again
    assert time.monotonic() - start >= 0.3
    b.finish("k", RESULT)
    a.finish("k", {"sr": 0.1})  # the old owner comes back: its result is not stored
    assert b.get("k")["status"] == "done" and '"sr": 0.9' in b.get("k")["result"]


def test_a_computed_result_reopened_is_owned_by_one_worker_and_the_other_waits(url):
    a, b = _table(url, "a"), _table(url, "b")
    assert a.claim("k", "cfg", CONTEXT, "s", 0).owned
    a.finish("k", {"sr": 0.5, "stage": "sample"})
    stored = b.claim("k", "cfg", CONTEXT, "other-study", 1)
    assert not stored.owned and stored.result["stage"] == "sample"
    assert b.reopen(stored, "other-study", 1).owned
    assert b.get("k")["status"] == "running" and b.get("k")["owner"] == "b"
    waits: list[str] = []
    thread, out = _claim_in_thread(a, "k", waits)
    deadline = time.monotonic() + 5
    while not waits and time.monotonic() < deadline:
        time.sleep(0.01)
    assert waits == ["b"]  # the reopened row is b's until it stores the full result
    b.finish("k", RESULT)
    thread.join(timeout=5)
    assert out["claim"].result == RESULT


def test_a_beating_owner_keeps_its_claim(url):
    a, b = _table(url, "a"), _table(url, "b", stale_after_s=0.3)
    assert a.claim("k", "cfg", CONTEXT, "s", 0).owned
    waits: list[str] = []
    with a.beating("k", every_s=0.05):
        thread, out = _claim_in_thread(b, "k", waits)
        time.sleep(0.8)  # more than twice the staleness: b must still be waiting
        assert thread.is_alive()
        a.finish("k", RESULT)
    thread.join(timeout=5)
    assert not out["claim"].owned and out["claim"].result == RESULT


def test_of_many_simultaneous_claims_exactly_one_owns(url):
    tables = [_table(url, f"w{i}") for i in range(6)]
    tables[0].rows()  # the table exists before the race
    barrier = threading.Barrier(len(tables))
    owned: list[bool] = []

    def claim(table: ResultsTable) -> None:
        barrier.wait()
        c = table.claim("k", "cfg", CONTEXT, "s", 0, on_wait=lambda owner: None)
        owned.append(c.owned)
        if c.owned:
            time.sleep(0.1)
            table.finish("k", RESULT)

    threads = [threading.Thread(target=claim, args=(t,)) for t in tables]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(owned) == [False] * 5 + [True]


def test_claims_go_stale_when_optuna_fails_a_dead_trial():
    # one set of liveness constants: a dead worker's claim is free when its trial is retried
    assert ResultsTable("sqlite://", owner="x").stale_after.total_seconds() == GRACE_S
