"""The terminal side of the tool: ``Events`` shown with rich, and the tables the commands print."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sweep.evaluation.measurement import Stage
from sweep.events import Events
from sweep.metrics import METRICS
from sweep.paper_table import has_deploy_ratio
from sweep.report import front, has_deploy

if TYPE_CHECKING:
    from sweep.compress.config import CompressionConfig
    from sweep.evaluation.measurement import Measurement

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class ConsoleEvents(Events):
    """Spinners for slow steps, a line per trial, and a bar of complete trials."""

    def __init__(self, out: Console = console) -> None:
        self.console = out
        self._progress: Progress | None = None
        self._task = None
        self._phase_s: dict[str, list[float]] = {}  # seconds each phase took in earlier trials

    def note(self, text: str) -> None:
        self.console.print(text)

    @contextmanager
    def busy(self, text: str) -> Iterator[None]:
        with self.console.status(text):
            yield

    def trials_started(self, done: int, target: int) -> None:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self._progress = Progress(*columns, console=self.console)
        self._progress.start()
        self._task = self._progress.add_task("new configurations", total=target, completed=done)

    def trials_progress(self, done: int, target: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=target)

    def trial_phase(self, number: int, config: CompressionConfig, phase: str) -> None:
        if self._progress is None:
            return
        past = self._phase_s.get("evaluate" if phase == "evaluate" else "compress")
        eta = f" · ~{sum(past) / len(past):.0f}s" if past else ""
        self._progress.update(
            self._task, description=f"trial {number} · {phase}{eta} · {config.key()}"
        )

    def trial_measured(self, number: int, config: CompressionConfig, m: Measurement) -> None:
        t = m.timings
        self._phase_s.setdefault("compress", []).append(t["calibration_s"] + t["compress_s"])
        self._phase_s.setdefault("evaluate", []).append(t["evaluate_s"])
        self.console.print(trial_line(number, config, m))

    def trial_reused(self, number: int, config: CompressionConfig) -> None:
        self.console.print(f"  trial {number}: {config.key()}: computed before, result reused")

    def trial_failed(self, number: int, config: CompressionConfig, reason: str) -> None:
        self.console.print(f"  [red]trial {number} failed[/]: {config.key()}: {reason}")

    def trials_finished(self, done: int, seconds: float) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=done, description=f"trials done in {seconds:.0f}s"
            )
            self._progress.stop()
            self._progress = None


def trial_line(number: int, config: CompressionConfig, m: Measurement) -> str:
    """One line for a computed trial: its metrics and where its time went."""
    shown = [f"{METRICS[k].label} {METRICS[k].show(m.value(k))}" for k in ("sr", "srcr", "tcr")]
    if m.stage == Stage.SAMPLE:
        shown[0] = f"Sr ~{m.sr:.3f} [{m.sr_low:.3f}, {m.sr_high:.3f}]"
    elif m.sr_low is not None and m.sr_high is not None:  # its 95% interval
        shown[0] = f"Sr {m.sr:.3f} [{m.sr_low:.3f}, {m.sr_high:.3f}]"
    agreements = m.task_agreement()
    if agreements:
        scored = sum(a.documents for a in agreements.values())
        recovery = sum(a.recovery for a in agreements.values()) / len(agreements)
        mean = " (mean)" if len(agreements) > 1 else ""
        shown.insert(1, f"recovery {recovery:.1%}{mean} flips {m.flips}/{scored}")
    shown.append(f"ratio {METRICS['real_ratio'].show(m.real_ratio)}")
    if m.perplexity is not None:
        shown.append(f"ppl {m.perplexity:.2f}")
    if m.kl is not None:
        shown.append(f"KL {m.kl:.3f}")
    if m.layers:
        shown.append(f"[{m.layer_summary}]")
    if m.deployable is not None:
        verdict = "deployable" if m.deployable else "[red]not deployable[/]"
        shown.append(
            f"{verdict} {METRICS['deploy_ratio'].show(m.deploy_ratio)} ({m.deploy_reason})"
        )
    t = m.timings
    stopped = f"; [yellow]{Stage(m.stage).stopped}[/]: dominated by the front" if not m.full else ""
    return (
        f"  trial {number}: {config.key()}: {' '.join(shown)} "
        f"({t['calibration_s']:.1f}s calibrate, {t['compress_s']:.1f}s compress, "
        f"{t['evaluate_s']:.1f}s eval{stopped})"
    )


def metrics_table(config: CompressionConfig, m: Measurement) -> Table:
    """Every metric of one computed configuration, and its task scores."""
    table = Table(title=config.key(), title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric in METRICS.values():
        value = m.value(metric.name)
        if value is not None:
            table.add_row(metric.label, metric.show(value))
    if m.deployable is not None:
        table.add_row("deployable", f"{'yes' if m.deployable else 'no'}: {m.deploy_reason}")
    agreements = m.task_agreement()
    if m.sr_low is not None and m.sr_high is not None:
        which = "stage 1's interval" if m.stage == Stage.SAMPLE else "95% interval"
        table.add_row(f"Sr, {which}", f"{m.sr_low:.3f} to {m.sr_high:.3f}")
    for task, score in m.task_scores.items():
        table.add_row(task, f"{score:.4f}")
        if task in agreements:
            a = agreements[task]
            table.add_row(f"  {task}: recovery", f"{a.recovery:.1%}")
            table.add_row(f"  {task}: flips", f"{a.flips} of {a.documents} ({a.flip_rate:.1%})")
    return table


def front_table(df: pd.DataFrame, x: str = "tcr", y: str = "srcr") -> Table:
    """The Pareto front as a rich table for the terminal."""
    rows = front(df, x, y)
    table = Table(title=f"Pareto front: {y} against {x}", title_justify="left")
    shown = ("tcr", "real_ratio", "sr", "srcr")
    if has_deploy(df):
        shown = ("tcr", "deploy_ratio", "sr", "srcr")
    for col in ("trial", "configuration", *(METRICS[m].label for m in shown)):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    score_cols = [c for c in df.columns if c.startswith("score:")]
    for col in score_cols:
        table.add_column(col.removeprefix("score:"), justify="right")
    for _, r in rows.iterrows():
        cells = [str(r["trial"]), r["config"], *(METRICS[m].show(r[m]) for m in shown)]
        cells += [f"{r[c]:.3f}" for c in score_cols]
        table.add_row(*cells)
    return table


def front_tables(df: pd.DataFrame, x: str = "tcr") -> list[Table]:
    """The front against ``x`` and, with a deploy runtime, the front against the deploy ratio
    (what the runtime holds) beside it."""
    tables = [front_table(df, x)]
    if has_deploy(df) and x != "deploy_ratio":
        tables.append(front_table(df, "deploy_ratio"))
    return tables


def paper_rich_table(table: pd.DataFrame) -> Table:
    """The paper's comparison for the terminal: Sr of quantization alone and of the best joint
    configuration at each TCr point."""
    out = Table(title="Quantization only vs pruning + quantization at equal TCr",
                title_justify="left")  # fmt: skip
    deploy = has_deploy_ratio(table)
    ratio = ["deploy"] if deploy else []
    for col in ("TCr", "quantization only", *ratio, "Sr", "joint", "its TCr", *ratio, "Sr",
                "Δ Sr"):  # fmt: skip
        out.add_column(col, justify="left" if col in ("quantization only", "joint") else "right")
    for _, r in table.iterrows():
        joint = r["joint_config"] if isinstance(r["joint_config"], str) else "–"
        has_joint = isinstance(r["joint_config"], str)
        out.add_row(
            f"{r['tcr']:.2%}",
            str(r["quant_config"]),
            *([f"{r['quant_deploy_ratio']:.2f}x"] if deploy else []),
            f"{r['quant_sr']:.3f}",
            joint,
            f"{r['joint_tcr']:.2%}" if has_joint else "–",
            *([f"{r['joint_deploy_ratio']:.2f}x" if has_joint else "–"] if deploy else []),
            f"{r['joint_sr']:.3f}" if has_joint else "–",
            f"{r['rel_diff']:+.1%}" if has_joint else "–",
        )
    return out
