"""Shared test helpers: running the command line, and fingerprints of a database."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWEEP = [sys.executable, "-m", "sweep.cli"]


def spec_data(path: Path) -> dict:
    """A spec file's fields, as YAML would hold them, with its relative paths made absolute (so
    that a test may write a variant of it into another folder)."""
    from sweep.spec import load_spec

    return load_spec(path).model_dump(mode="json", exclude_none=True)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def sweep(
    *args: str, cwd: Path, timeout: float = 600, process: bool = False
) -> subprocess.CompletedProcess:
    """The CLI on ``args`` in folder ``cwd``: in this process (typer's runner: the same code,
    without paying seconds of imports per call), or with ``process`` in a fresh one, for what
    only a process shows (its environment read at import, signals, its exit)."""
    if process:
        return subprocess.run(
            [*SWEEP, *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout
        )
    return _in_process(list(args), cwd)


def _in_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI here, putting back what a command changes for the rest of the process: the
    working folder, the environment, the signal handlers and torch's threads."""
    import signal
    import traceback

    import torch
    from typer.testing import CliRunner

    from sweep.cli import app

    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    os.environ.update(env())  # what the worker processes a run starts inherit
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for signum, handler in saved_signals.items():
            signal.signal(signum, handler)
        torch.set_num_threads(threads)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["sweep", *args], result.exit_code, result.stdout, stderr)


def run_spec(
    spec: dict, folder: Path, *args: str, url: str | None = None
) -> tuple[str, subprocess.CompletedProcess]:
    """Write ``spec`` to ``folder/<name>.yaml`` and `sweep run` it with ``args`` on ``url``
    (default: ``folder/<name>.db``), asserting that it succeeds; returns the URL and the run."""
    import yaml

    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    url = url or f"sqlite:///{folder / spec['name']}.db"
    done = sweep("run", str(path), "--storage", url, *args, cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    return url, done


def sweep_async(*args: str, cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the CLI in the background, its output going to ``cwd/sweep.log``, with
    ``extra_env`` added to its environment."""
    log = (cwd / "sweep.log").open("w")
    process_env = {**env(), **(extra_env or {})}
    return subprocess.Popen([*SWEEP, *args], cwd=cwd, env=process_env, stdout=log, stderr=log)


def db_contents(url: str) -> str | None:
    """Every row of every table, as one digest; None when a SQLite file does not exist."""
    import sqlalchemy as sa

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    engine = sa.create_engine(url)
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for table in sorted(sa.inspect(engine).get_table_names()):
            rows = conn.execute(sa.text(f'SELECT * FROM "{table}"')).all()
            digest.update(table.encode() + repr(sorted(map(repr, rows))).encode())
    engine.dispose()
    return digest.hexdigest()
