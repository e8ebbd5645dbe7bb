"""What a study found: its trials as a table, the Pareto front, and the front as a plotly plot."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState
from rich.table import Table

AXIS_LABELS = {
    "srcr": "SrCr (retention per capacity kept)",
    "sr": "Sr (semantic retention)",
    "tcr": "TCr (theoretical compression rate)",
    "real_ratio": "real compression ratio (x smaller on disk)",
}


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial: its configuration, metrics and per-task scores."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        row = {"trial": t.number, "config": a.get("config_key", "")}
        row.update(a.get("config", {}))
        for name in ("sparsity", "tcr", "real_ratio", "sr", "srcr", "perplexity"):
            row[name] = a.get(name)
        for task, score in a.get("task_scores", {}).items():
            row[f"score:{task}"] = score
        row["reused"] = bool(a.get("reused", False))
        rows.append(row)
    return pd.DataFrame(rows)


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
    """The Pareto front of ``y`` against ``x``, one row per configuration, sorted by ``x``."""
    if df.empty:
        return df
    unique = df.drop_duplicates("config")
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


def pareto_figure(df: pd.DataFrame, x: str = "tcr", y: str = "srcr", title: str = ""):
    """Every trial as a point, the front highlighted and joined, hover text with the config."""
    import plotly.graph_objects as go

    fig = go.Figure()
    hover = "%{text}<br>" + f"{x}=%{{x:.4f}}<br>{y}=%{{y:.3f}}<extra></extra>"
    fig.add_trace(
        go.Scatter(
            x=df[x],
            y=df[y],
            text=df["config"],
            mode="markers",
            name="trials",
            marker={"color": "lightgray", "size": 9, "line": {"width": 1, "color": "gray"}},
            hovertemplate=hover,
        )
    )
    best = front(df, x, y)
    fig.add_trace(
        go.Scatter(
            x=best[x],
            y=best[y],
            text=best["config"],
            mode="lines+markers",
            name="Pareto front",
            marker={"color": "crimson", "size": 11},
            line={"color": "crimson"},
            hovertemplate=hover,
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title=AXIS_LABELS.get(x, x),
        yaxis_title=AXIS_LABELS.get(y, y),
        template="plotly_white",
    )
    return fig


def write_pareto_html(
    df: pd.DataFrame, path: Path, x: str = "tcr", y: str = "srcr", title: str = ""
) -> Path:
    """Write the Pareto plot as one self-contained HTML file (opens offline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pareto_figure(df, x, y, title).write_html(path, include_plotlyjs=True, full_html=True)
    return path
