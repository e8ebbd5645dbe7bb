"""The Pareto plots: every trial coloured by ordering and pattern, the front highlighted with the
95% intervals of its Sr, the full configuration on hover; written as self-contained HTML and,
where Chromium is installed, PNG."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from sweep.compress import CompressionConfig
from sweep.evaluation.measurement import Stage
from sweep.metrics import METRICS

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
INFEASIBLE = "outside the study's constraints"
UNDEPLOYABLE = "refused by the deploy runtime"


class PngUnavailable(RuntimeError):
    """PNG export needs kaleido and a Chromium; the message says what is missing."""


def family(config: CompressionConfig) -> str:
    """The kind of compression, for colouring: ordering and pattern, or one method alone."""
    c = config.canonical()
    per_layer = " · per-layer" if c.non_uniform else ""
    if c.prunes and c.quantizes:
        order = f"prune→quant (Case {c.case})" if c.order == "prune_first" else c.order
        order = "quant→prune" if c.order == "quant_first" else order
        return f"{order} · {c.pattern}{per_layer}"
    if c.quantizes:
        return f"quantization only{per_layer}"
    if c.prunes:
        return f"pruning only · {c.pattern}{per_layer}"
    return "uncompressed"


def _hover(row: pd.Series, tasks: list[str]) -> str:
    def show(*names: str) -> str:
        return " · ".join(f"{METRICS[n].label} {METRICS[n].show(row[n])}" for n in names)

    lines = [
        f"<b>trial {row['trial']}</b>: {row['config']}",
        show("tcr", "real_ratio"),
        show("sr", "srcr"),
    ]
    if pd.notna(row.get("perplexity")):
        lines.append(show("perplexity"))
    if pd.notna(row.get("kl")):
        lines.append(show("kl"))
    if isinstance(row.get("layers"), str) and row["layers"]:
        lines.append(f"per layer: {row['layers']}")
    if isinstance(row.get("deploy_reason"), str):
        verdict = "deployable" if row["deployable"] else "not deployable"
        lines.append(f"{verdict}, {show('deploy_ratio')}: {row['deploy_reason']}")
    if row.get("stage") == Stage.SAMPLE:
        lines.append(f"{Stage.SAMPLE.stopped}: Sr in [{row['sr_low']:.3f}, {row['sr_high']:.3f}]")
    elif pd.notna(row.get("sr_low")):
        lines.append(f"Sr's 95% interval: [{row['sr_low']:.3f}, {row['sr_high']:.3f}]")
    if row.get("stage") == Stage.TASKS:
        lines.append(f"{Stage.TASKS.stopped}: the study's front dominated it on its objectives")
    if pd.notna(row.get("flips")):
        lines.append(f"flips against the base model: {row['flips']:.0f} ({row['flip_rate']:.1%})")
    for column in tasks:
        task = column.removeprefix("score:")
        recovery = row.get(f"recovery:{task}")
        kept = f" (recovery {recovery:.1%})" if pd.notna(recovery) else ""
        lines.append(f"{task}: {row[column]:.3f}{kept}")
    return "<br>".join(lines)


def error_bars(df: pd.DataFrame, y: str) -> dict | None:
    """Plotly's asymmetric error bars of Sr's interval on ``y`` (Sr, or SrCr: Sr over the
    capacity kept, so its interval scales with it); None on another axis or without intervals."""
    if y not in ("sr", "srcr") or "sr_low" not in df or df["sr_low"].isna().all():
        return None
    scale = (df[y] / df["sr"]).where(df["sr"] > 0, 0.0)
    high = ((df["sr_high"] - df["sr"]) * scale).fillna(0.0)
    low = ((df["sr"] - df["sr_low"]) * scale).fillna(0.0)
    return {"type": "data", "symmetric": False, "array": list(high), "arrayminus": list(low),
            "thickness": 1.2, "width": 4}  # fmt: skip


def pareto_figure(df: pd.DataFrame, x: str, y: str, front: pd.DataFrame, title: str = ""):
    """Every trial of ``df`` as a point coloured by ``family``, and ``front`` joined by a line."""
    import plotly.graph_objects as go

    tasks = [c for c in df.columns if c.startswith("score:")]
    families = df["family"].where(df["feasible"], INFEASIBLE)
    if "deployable" in df:
        families = families.where(df["deployable"] != False, UNDEPLOYABLE)  # noqa: E712
    data = df.assign(family=families, hover=[_hover(r, tasks) for _, r in df.iterrows()])
    fig = go.Figure()
    for name, group in sorted(data.groupby("family"), key=lambda item: str(item[0])):
        # a trial that staged evaluation stopped (an estimate, or no perplexity) is drawn hollow
        stopped = group["stage"] != Stage.FULL if "stage" in group else [False] * len(group)
        symbols = ["circle-open" if s else "circle" for s in stopped]
        fig.add_trace(
            go.Scatter(
                x=group[x], y=group[y], text=group["hover"], mode="markers", name=str(name),
                marker={"size": 10, "opacity": 0.85, "symbol": symbols,
                        "line": {"width": 1, "color": "white"}},
                hovertemplate="%{text}<extra></extra>",
            )
        )  # fmt: skip
    best = data.loc[front.index] if not front.empty else front
    fig.add_trace(
        go.Scatter(
            x=best[x], y=best[y], text=best.get("hover"), mode="lines+markers",
            name="Pareto front", hovertemplate="%{text}<extra></extra>",
            error_y=error_bars(best, y) if not best.empty else None,
            line={"color": "black", "width": 1.5, "dash": "dot"},
            marker={"size": 16, "symbol": "circle-open", "color": "black", "line": {"width": 2}},
        )
    )  # fmt: skip
    fig.update_layout(
        title=title,
        xaxis_title=METRICS[x].title,
        yaxis_title=METRICS[y].title,
        template="plotly_white",
        legend={"title": "ordering · pattern"},
        width=900,
        height=560,
    )
    return fig


def side_by_side(left, right, title: str):
    """Two figures' traces as the two panels of one, sharing their y axis and legend."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06)
    for col, part in ((1, left), (2, right)):
        for trace in part.data:
            trace.showlegend = col == 1
            fig.add_trace(trace, row=1, col=col)
        fig.update_xaxes(title_text=part.layout.xaxis.title.text, row=1, col=col)
    fig.update_yaxes(title_text=left.layout.yaxis.title.text, row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", width=1400, height=560,
                      legend={"title": "ordering · pattern"})  # fmt: skip
    return fig


def write_html(fig, path: Path) -> Path:
    """One self-contained HTML file (plotly.js inlined: opens offline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path


def chromium_path() -> str | None:
    """The Chromium that kaleido drives, if one is installed."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def write_png(fig, path: Path) -> Path:
    """The figure as PNG through kaleido; raises PngUnavailable when it cannot run here."""
    try:
        import kaleido  # noqa: F401
    except ImportError as err:
        raise PngUnavailable("PNG skipped: kaleido is not installed (pip install kaleido)") from err
    browser = chromium_path()
    if browser is None:
        raise PngUnavailable(
            "PNG skipped: kaleido needs a Chromium and none is installed "
            "(Debian/Ubuntu: apt-get install chromium; `make report` tries this for you)"
        )
    import os

    os.environ.setdefault("BROWSER_PATH", browser)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_image(path, format="png", scale=2)
    return path
