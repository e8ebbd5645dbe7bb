"""`sweep status`: a running trial whose worker died shows as such, with the age of its last
heartbeat."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from sweep.storage import GRACE_S

from .helpers import sweep
from .test_workers import _start_until_mid_trial

pytestmark = pytest.mark.slow  # whole studies through the CLI


def test_status_shows_the_heartbeat_of_running_trials_and_a_dead_workers_as_stale(
    tmp_path: Path, toy_dir: Path
):
    url, run, victim, _ = _start_until_mid_trial(tmp_path, toy_dir, "dead", 6)
    run.send_signal(signal.SIGKILL)  # no chance to mark its trial
    run.wait(timeout=30)
    killed = time.monotonic()
    args = ("status", "--storage", url, "--study-name", "dead")

    fresh = sweep(*args, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "1 running" in fresh.stdout
    row = next(line for line in fresh.stdout.splitlines() if re.match(rf"\W*{victim}\W", line))
    assert re.search(r"\d+ s ago", row), fresh.stdout
    assert "its worker is gone" not in fresh.stdout

    time.sleep(max(0.0, GRACE_S + 2 - (time.monotonic() - killed)))
    stale = sweep(*args, cwd=tmp_path)
    assert stale.returncode == 0, stale.stdout + stale.stderr
    line = re.search(
        rf"trial {victim}: running, no heartbeat for (\d+) s: its worker is gone; the next worker "
        "of this study fails it and retries its configuration",
        " ".join(stale.stdout.split()),
    )
    assert line, stale.stdout
    assert GRACE_S < int(line[1]) <= time.monotonic() - killed + 5  # its last beat: up to 5 s
