"""What a study found: its trials as a table, the Pareto fronts, the paper's comparison, and the
files `sweep report` writes (plots as HTML and PNG, the table as markdown and CSV, all trials as
CSV). The terminal's tables of the same are in ``sweep.console``."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import pandas as pd
from optuna.trial import TrialState

from sweep.errors import UserError
from sweep.evaluation.measurement import Measurement, Stage
from sweep.evaluation.stages import dominated_by
from sweep.metrics import METRICS
from sweep.owned_folder import OwnedFolder
from sweep.paper_table import paper_table, to_markdown
from sweep.plots import (
    PngUnavailable,
    family,
    pareto_figure,
    side_by_side,
    write_html,
    write_png,
)
from sweep.record import TrialRecord, trial_records
from sweep.spec import RUNS
from sweep.study import stored_base

if TYPE_CHECKING:
    import plotly.graph_objects as go

# the metrics that a trial stopped after its sample holds as estimates (its TCr and real ratio
# are exact, as are all the values of a trial stopped before its perplexity)
ESTIMATED_AT_SAMPLE = frozenset({"sr", "srcr"})


def trials_frame(study: optuna.Study, all_states: bool = False) -> pd.DataFrame:
    """One row per complete trial (or every trial with ``all_states``; surplus trials, which
    computed nothing, left out): the configuration's fields (``sparsity`` is what it asks for,
    ``target_sparsity`` what its pattern means), its ``family``, its metrics
    (``measured_sparsity`` is what the pruning step removed), per-task scores
    (``score:<task>``), phase timings, and what happened to the trial."""
    states = () if all_states else (TrialState.COMPLETE,)
    rows = [_row(r) for r in trial_records(study, *states) if not r.surplus]
    return pd.DataFrame(rows)


def _row(r: TrialRecord) -> dict[str, object]:
    row: dict[str, object] = {
        "trial": r.number,
        "state": r.state.name,
        "config": r.config_key or "",
    }
    if r.config is not None:
        row.update(r.config.to_dict())
        row["target_sparsity"] = r.config.target_sparsity
        row["family"] = family(r.config)
    m = r.measurement
    for name in METRICS:
        row[name] = None if m is None else m.value(name)
    if m is not None:
        row.update({f"score:{task}": score for task, score in m.task_scores.items()})
        row.update(m.timings)
        row.update(stage=m.stage, sr_low=m.sr_low, sr_high=m.sr_high, layers=m.layer_summary)
        row.update(agreement_columns(m))
        row.update(deployable=m.deployable, deploy_reason=m.deploy_reason)
    row.update(feasible=r.feasible, reused=r.reused, worker=r.worker, fail_reason=r.fail_reason)
    return row


def agreement_columns(m: Measurement) -> dict[str, float | int]:
    """A trial's agreement with the base model as columns: its flips over every task
    (``flips``, and ``flip_rate`` of the documents scored), and per task its flips, recovery
    and retention's 95% interval (``flips:<task>``, ``recovery:<task>``,
    ``retention_low:<task>``, ``retention_high:<task>``). None for results stored before."""
    agreements = m.task_agreement()
    if not agreements:
        return {}
    documents = sum(a.documents for a in agreements.values())
    flips = m.flips or 0
    row: dict[str, float | int] = {
        "flips": flips,
        "flip_rate": flips / documents if documents else 0.0,
    }
    for task, a in agreements.items():
        row[f"flips:{task}"] = a.flips
        row[f"recovery:{task}"] = a.recovery
        row[f"retention_low:{task}"] = a.retention_low
        row[f"retention_high:{task}"] = a.retention_high
    return row


def reuse_summary(df: pd.DataFrame) -> str:
    """How many distinct configurations the complete trials hold, and how many trials reused a
    stored result instead of computing one."""
    reused = int(df["reused"].sum())
    return (
        f"{len(df)} complete trials: {df['config'].nunique()} distinct configurations, "
        f"{reused} trial{'' if reused == 1 else 's'} reused a stored result"
    )


def pareto_mask(df: pd.DataFrame, x: str, y: str) -> pd.Series:
    """True for rows that no other row beats on both ``x`` and ``y`` (both maximised)."""
    points = [tuple(p) for p in df[[x, y]].to_numpy()]
    return pd.Series([not dominated_by(p, points) for p in points], index=df.index)


def front(df: pd.DataFrame, x: str = "tcr", y: str = "srcr") -> pd.DataFrame:
    """The Pareto front of ``y`` against ``x`` among the trials that meet the study's
    constraints and whose ``x`` and ``y`` are exact, one row per configuration, sorted by
    ``x``. A trial that staged evaluation stopped after its sample holds estimates of Sr and
    SrCr, so it is left out of a front over either; one stopped before its perplexity measured
    them exactly and is on any front that its values put it on."""
    if df.empty:
        return df
    exact = pd.Series(True, index=df.index)
    if "stage" in df and ESTIMATED_AT_SAMPLE & {x, y}:
        exact = df["stage"] != Stage.SAMPLE
    unique = df[df["feasible"] & exact].drop_duplicates("config")
    return unique[pareto_mask(unique, x, y)].sort_values([x, y])


def pareto_html_path(storage_url: str, name: str) -> Path:
    """Where `sweep run` writes the study's Pareto plot: next to a SQLite file, else in runs/."""
    if storage_url.startswith("sqlite:///"):
        return Path(storage_url.removeprefix("sqlite:///")).parent / f"{name}-pareto.html"
    return RUNS / f"{name}-pareto.html"


def write_pareto_html(
    df: pd.DataFrame, path: Path, x: str = "tcr", y: str = "srcr", title: str = ""
) -> Path:
    """The Pareto plot of ``y`` against ``x`` as one self-contained HTML file."""
    return write_html(pareto_figure(df, x, y, front(df, x, y), title), path)


@dataclass
class Report:
    """What `sweep report` wrote, and what it could not show and why."""

    folder: Path
    frame: pd.DataFrame  # trials_frame: the complete trials
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None  # the paper's table, when the study has one


class ReportError(UserError):
    """A report that cannot be written where it was asked."""


MANIFEST = "sweep-report.json"  # the files a report wrote: the folder's, and no others


def report_folder(folder: Path) -> OwnedFolder:
    """``folder`` as a folder that a report owns (see ``sweep.owned_folder``)."""
    return OwnedFolder(folder, MANIFEST, "report", ReportError)


def check_report_folder(folder: Path) -> None:
    """Refuse to write into a folder that holds anything but an earlier report's files."""
    report_folder(folder).check()


def write_report(study: optuna.Study, folder: Path, x: str = "tcr", png: bool = True) -> Report:
    """Write the study's plots, paper table and trials CSV into ``folder``, a new or empty one
    or one that holds an earlier report (its files are replaced, and those not written again
    removed)."""
    owned = report_folder(folder)
    owned.check()
    report = Report(folder, trials_frame(study))
    if x == "deploy_ratio" and not has_deploy(report.frame):
        raise ReportError(
            f"--x deploy_ratio: study {study.study_name!r} has no deploy runtime (its trials hold "
            "no deploy ratio); use tcr or real_ratio, or run a study with deploy: {runtime: ...}"
        )
    fill = functools.partial(_write_report, study, report, x=x, png=png)
    report.files = owned.write(fill, {"study": study.study_name})
    return report


def has_deploy(df: pd.DataFrame) -> bool:
    """Whether the trials were judged by a deploy runtime (they hold deploy ratios)."""
    return "deploy_ratio" in df and bool(df["deploy_ratio"].notna().any())


def report_figures(df: pd.DataFrame, name: str, x: str = "tcr") -> dict[str, go.Figure]:
    """The report's plots by file stem: SrCr against ``x``, and Sr against TCr; with a deploy
    runtime, also SrCr against TCr (the paper's theory) beside SrCr against the deploy ratio
    (what the runtime holds), from the same trials."""
    figures = _figures(df, name, x)
    if has_deploy(df):
        figures["pareto-deploy"] = side_by_side(
            pareto_figure(df, "tcr", "srcr", front(df, "tcr", "srcr")),
            pareto_figure(df, "deploy_ratio", "srcr", front(df, "deploy_ratio", "srcr")),
            f"{name}: SrCr against TCr (the paper's theory) and against the deploy ratio "
            "(what the runtime holds)",
        )
    return figures


def _figures(df: pd.DataFrame, name: str, x: str) -> dict[str, go.Figure]:
    return {
        "pareto-srcr": pareto_figure(
            df, x, "srcr", front(df, x, "srcr"), f"{name}: SrCr against {METRICS[x].label}"
        ),
        "pareto-sr": pareto_figure(
            df, "tcr", "sr", front(df, "tcr", "sr"), f"{name}: Sr against TCr"
        ),
    }


def _write_report(study: optuna.Study, report: Report, folder: Path, x: str, png: bool) -> None:
    df = report.frame
    trials_frame(study, all_states=True).to_csv(folder / "trials.csv", index=False)
    if df.empty:
        report.notes.append(
            f"study {study.study_name!r} has no complete trial yet: no plot and no table "
            "(trials.csv lists its trials)"
        )
        return
    png_skipped = not png
    for stem, fig in report_figures(df, study.study_name, x).items():
        write_html(fig, folder / f"{stem}.html")
        if not png_skipped:
            try:
                write_png(fig, folder / f"{stem}.png")
            except PngUnavailable as err:
                report.notes.append(str(err))
                png_skipped = True
    base = stored_base(study)
    if base is None:
        report.notes.append("no base reference stored: no paper table")
        return
    table = paper_table(df, base)
    if table.empty:
        report.notes.append(
            "no paper table: it compares quantization alone with pruning + quantization at "
            "equal TCr, and no complete trial quantizes without pruning"
        )
        return
    table.to_csv(folder / "paper-table.csv", index=False)
    (folder / "paper-table.md").write_text(to_markdown(table))
    report.table = table
