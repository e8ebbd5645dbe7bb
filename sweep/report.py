"""What a study found: its trials as a table, the Pareto fronts, the paper's comparison, and the
files `sweep report` writes (plots as HTML and PNG, the table as markdown and CSV, all trials as
CSV)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState
from rich.table import Table

from sweep.paper_table import paper_table, to_markdown
from sweep.plots import PngUnavailable, pareto_figure, write_html, write_png
from sweep.spec import meets_constraints

METRICS = ("sparsity", "zero_fraction", "tcr", "real_ratio", "sr", "srcr", "perplexity")


def trials_frame(study: optuna.Study, all_states: bool = False) -> pd.DataFrame:
    """One row per complete trial (or every trial with ``all_states``): its configuration's
    parameters, its metrics, per-task scores (``score:<task>``) and phase timings."""
    states = None if all_states else (TrialState.COMPLETE,)
    rows = []
    for t in study.get_trials(deepcopy=False, states=states):
        a = t.user_attrs
        if a.get("surplus"):
            continue  # admitted past the target: computed nothing
        row: dict[str, object] = {"trial": t.number, "state": t.state.name,
                                  "config": a.get("config_key", "")}  # fmt: skip
        config = a.get("config", {})
        row.update(config)
        row["config_dict"] = config
        for name in METRICS:
            row[name] = a.get(name)
        for task, score in a.get("task_scores", {}).items():
            row[f"score:{task}"] = score
        for phase, seconds in a.get("timings", {}).items():
            row[phase] = seconds
        row["feasible"] = meets_constraints(t.constraints)
        row["reused"] = bool(a.get("reused", False))
        row["worker"] = a.get("worker")
        row["fail_reason"] = a.get("fail_reason")
        rows.append(row)
    return pd.DataFrame(rows)


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
    values = df[[x, y]].to_numpy()
    keep = []
    for i, (xi, yi) in enumerate(values):
        dominated = any(
            xj >= xi and yj >= yi and (xj > xi or yj > yi)
            for j, (xj, yj) in enumerate(values)
            if j != i
        )
        keep.append(not dominated)
    return pd.Series(keep, index=df.index)


def front(df: pd.DataFrame, x: str = "tcr", y: str = "srcr") -> pd.DataFrame:
    """The Pareto front of ``y`` against ``x`` among the trials that meet the study's
    constraints, one row per configuration, sorted by ``x``."""
    if df.empty:
        return df
    unique = df[df["feasible"]].drop_duplicates("config")
    return unique[pareto_mask(unique, x, y)].sort_values([x, y])


def front_table(df: pd.DataFrame, x: str = "tcr", y: str = "srcr") -> Table:
    """The Pareto front as a rich table for the terminal."""
    rows = front(df, x, y)
    table = Table(title=f"Pareto front: {y} against {x}", title_justify="left")
    for col in ("trial", "configuration", "TCr", "ratio", "Sr", "SrCr"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    score_cols = [c for c in df.columns if c.startswith("score:")]
    for col in score_cols:
        table.add_column(col.removeprefix("score:"), justify="right")
    for _, r in rows.iterrows():
        cells = [
            str(r["trial"]),
            r["config"],
            f"{r['tcr']:.4f}",
            f"{r['real_ratio']:.2f}x",
            f"{r['sr']:.3f}",
            f"{r['srcr']:.3f}",
        ]
        cells += [f"{r[c]:.3f}" for c in score_cols]
        table.add_row(*cells)
    return table


def paper_rich_table(table: pd.DataFrame) -> Table:
    """The paper's comparison for the terminal: Sr of quantization alone and of the best joint
    configuration at each TCr point."""
    out = Table(title="Quantization only vs pruning + quantization at equal TCr",
                title_justify="left")  # fmt: skip
    for col in ("TCr", "quantization only", "Sr", "joint", "its TCr", "Sr", "Δ Sr"):
        out.add_column(col, justify="left" if col in ("quantization only", "joint") else "right")
    for _, r in table.iterrows():
        joint = r["joint_config"] if isinstance(r["joint_config"], str) else "–"
        has_joint = isinstance(r["joint_config"], str)
        out.add_row(
            f"{r['tcr']:.2%}",
            str(r["quant_config"]),
            f"{r['quant_sr']:.3f}",
            joint,
            f"{r['joint_tcr']:.2%}" if has_joint else "–",
            f"{r['joint_sr']:.3f}" if has_joint else "–",
            f"{r['rel_diff']:+.1%}" if has_joint else "–",
        )
    return out


def pareto_html_path(storage_url: str, name: str) -> Path:
    """Where `sweep run` writes the study's Pareto plot: next to a SQLite file, else in runs/."""
    if storage_url.startswith("sqlite:///"):
        return Path(storage_url.removeprefix("sqlite:///")).parent / f"{name}-pareto.html"
    return Path("runs") / f"{name}-pareto.html"


def write_pareto_html(
    df: pd.DataFrame, path: Path, x: str = "tcr", y: str = "srcr", title: str = ""
) -> Path:
    """The Pareto plot of ``y`` against ``x`` as one self-contained HTML file."""
    return write_html(pareto_figure(df, x, y, front(df, x, y), title), path)


@dataclass
class Report:
    """The files `sweep report` wrote, and why a PNG is missing if it is."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    png_skipped: str | None = None
    table: pd.DataFrame | None = None


def write_report(study: optuna.Study, folder: Path, x: str = "tcr", png: bool = True) -> Report:
    """Write the study's plots, paper table and trials CSV into ``folder``."""
    from sweep.study import stored_base

    folder.mkdir(parents=True, exist_ok=True)
    report = Report(folder)
    everything = trials_frame(study, all_states=True)
    everything.drop(columns=["config_dict"], errors="ignore").to_csv(
        folder / "trials.csv", index=False
    )
    report.files.append(folder / "trials.csv")
    df = trials_frame(study)
    if df.empty:
        return report
    name = study.study_name
    axis = {"tcr": "TCr", "real_ratio": "real compression ratio"}[x]
    figures = {
        "pareto-srcr": pareto_figure(
            df, x, "srcr", front(df, x, "srcr"), f"{name}: SrCr against {axis}"
        ),  # fmt: skip
        "pareto-sr": pareto_figure(
            df, "tcr", "sr", front(df, "tcr", "sr"), f"{name}: Sr against TCr"
        ),  # fmt: skip
    }
    for stem, fig in figures.items():
        report.files.append(write_html(fig, folder / f"{stem}.html"))
        if png and report.png_skipped is None:
            try:
                report.files.append(write_png(fig, folder / f"{stem}.png"))
            except PngUnavailable as err:
                report.png_skipped = str(err)
    base = stored_base(study)
    if base is None:
        return report
    table = paper_table(df, base)
    table.to_csv(folder / "paper-table.csv", index=False)
    (folder / "paper-table.md").write_text(to_markdown(table))
    report.files += [folder / "paper-table.csv", folder / "paper-table.md"]
    report.table = table
    return report
