"""The paper's comparison, from a study: at each TCr that quantization alone reaches, the best
quantization-only trial against the best joint (pruned and quantized) trial that compresses at
least as much, task by task, with the relative difference in semantic retention."""

from __future__ import annotations

import os

import pandas as pd

from sweep.evaluation.measurement import BaseReference, Stage
from sweep.metrics import task_retention

# a joint trial is compared at a TCr point when its own TCr is in [point, point + TCR_BAND)
TCR_BAND = 1 / 16


def retention_by_task(df: pd.DataFrame, base: BaseReference) -> pd.DataFrame:
    """Each trial's per-task retention (``sr:<task>`` columns), the terms whose mean is Sr."""
    out = pd.DataFrame(index=df.index)
    for task, base_score in base.scores.items():
        column = f"score:{task}"
        random = base.random_scores[task]
        out[f"sr:{task}"] = [task_retention(s, base_score, random, task) for s in df[column]]
    return out


def _best(rows: pd.DataFrame) -> pd.Series | None:
    return None if rows.empty else rows.sort_values(["sr", "tcr"], ascending=False).iloc[0]


def paper_table(df: pd.DataFrame, base: BaseReference) -> pd.DataFrame:
    """One row per TCr point of the quantization-only trials (most compressed last).

    ``df`` is ``report.trials_frame``'s complete trials; those stopped after their sample
    (estimates) are left out, those stopped before their perplexity (Sr exact) kept. Columns:
    ``tcr``, then for ``quant`` (the best quantization-only trial at that TCr) and ``joint``
    (the best trial that prunes and quantizes with TCr in [tcr, tcr + 1/16)): ``<side>_config``,
    ``<side>_tcr``, ``<side>_sr`` with its 95% interval (``<side>_sr_low``, ``<side>_sr_high``)
    and the share of documents whose answer changed against the base model's
    (``<side>_flip_rate``; NaN for results stored without per-document scores),
    ``<side>_deploy_ratio`` (what the study's deploy runtime holds; NaN without one) and
    ``<side>_sr:<task>``; and
    ``rel_diff = joint_sr / quant_sr - 1`` (the paper reports about +20% on 7-8B models). A point
    with no joint trial in its band has NaN joint columns.
    """
    columns = ["tcr", "quant_config", "quant_tcr", "quant_sr", "joint_config", "joint_tcr",
               "joint_sr", "rel_diff"]  # fmt: skip
    if "stage" in df:
        df = df[df["stage"] != Stage.SAMPLE]
    if df.empty:
        return pd.DataFrame(columns=columns)
    trials = pd.concat([df, retention_by_task(df, base)], axis=1)
    tasks = [c for c in trials.columns if c.startswith("sr:")]
    quant_only = trials[(trials["target_sparsity"] == 0) & (trials["bits"] < 16)]
    joint = trials[(trials["target_sparsity"] > 0) & (trials["bits"] < 16)]
    rows = []
    if quant_only.empty:
        return pd.DataFrame(columns=columns)
    for point in sorted(quant_only["tcr"].round(6).unique()):
        row: dict[str, object] = {"tcr": point}
        quant = _best(quant_only[quant_only["tcr"].round(6) == point])
        band = joint[(joint["tcr"] >= point - 1e-9) & (joint["tcr"] < point + TCR_BAND - 1e-9)]
        for side, best in (("quant", quant), ("joint", _best(band))):
            row[f"{side}_config"] = None if best is None else best["config"]
            for name in ("tcr", "sr", "sr_low", "sr_high", "flip_rate", "deploy_ratio", *tasks):
                value = None if best is None else best.get(name)
                row[f"{side}_{name}"] = float("nan") if value is None else float(value)
        row["rel_diff"] = row["joint_sr"] / row["quant_sr"] - 1 if row["quant_sr"] else None
        rows.append(row)
    table = pd.DataFrame(rows)
    ordered = ["tcr", "quant_config", "quant_tcr", "quant_deploy_ratio", "quant_sr",
               "quant_sr_low", "quant_sr_high", "quant_flip_rate", *(f"quant_{t}" for t in tasks),
               "joint_config", "joint_tcr", "joint_deploy_ratio", "joint_sr", "joint_sr_low",
               "joint_sr_high", "joint_flip_rate", *(f"joint_{t}" for t in tasks),
               "rel_diff"]  # fmt: skip
    return table[ordered]


def short_names(tasks: list[str]) -> list[str]:
    """Task names without the prefix they all share (``leaderboard_bbh`` -> ``bbh`` among
    leaderboard tasks), for narrow table headers."""
    if len(tasks) < 2:
        return tasks
    prefix = os.path.commonprefix(tasks)
    prefix = prefix[: prefix.rfind("_") + 1]  # whole words only
    return [t.removeprefix(prefix) for t in tasks]


def _pct(x: object) -> str:
    return "–" if x is None or pd.isna(x) else f"{float(x):.2%}"


def _ratio(x: object) -> str:
    return "–" if x is None or pd.isna(x) else f"{float(x):.2f}x"


def has_deploy_ratio(table: pd.DataFrame) -> bool:
    """Whether the study had a deploy runtime (its rows hold deploy ratios)."""
    return "quant_deploy_ratio" in table and bool(table["quant_deploy_ratio"].notna().any())


def _num(x: object) -> str:
    return "–" if x is None or pd.isna(x) else f"{float(x):.3f}"


def _sr(r: pd.Series, side: str) -> str:
    """Sr with its 95% interval where the study has one."""
    low, high = r.get(f"{side}_sr_low"), r.get(f"{side}_sr_high")
    if low is None or pd.isna(low) or high is None or pd.isna(high):
        return _num(r[f"{side}_sr"])
    return f"{_num(r[f'{side}_sr'])} ({float(low):.3f}-{float(high):.3f})"


def _flips(r: pd.Series, side: str) -> str:
    rate = r.get(f"{side}_flip_rate")
    return "–" if rate is None or pd.isna(rate) else f"{float(rate):.1%}"


def to_markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown: one row per TCr point, Sr per task for both sides, Sr
    with its 95% interval, and the share of answers flipped against the base model."""
    tasks = [c.removeprefix("quant_sr:") for c in table.columns if c.startswith("quant_sr:")]
    per_task = [f"Sr {t}" for t in short_names(tasks)]
    deploy = has_deploy_ratio(table)
    ratio_head = ["deploy ratio"] if deploy else []
    head = ["TCr", "quantization only", *ratio_head, *per_task, "Sr (95%)", "flips",
            "joint (prune + quantize)", "TCr", *ratio_head, *per_task, "Sr (95%)", "flips",
            "Δ Sr"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [_pct(r["tcr"]), f"`{r['quant_config']}`"]
        cells += [_ratio(r["quant_deploy_ratio"])] if deploy else []
        cells += [_num(r[f"quant_sr:{t}"]) for t in tasks] + [_sr(r, "quant"), _flips(r, "quant")]
        joint = r["joint_config"]
        cells += [f"`{joint}`" if isinstance(joint, str) else "–", _pct(r["joint_tcr"])]
        cells += [_ratio(r["joint_deploy_ratio"])] if deploy else []
        cells += [_num(r[f"joint_sr:{t}"]) for t in tasks] + [_sr(r, "joint"), _flips(r, "joint")]
        diff = r["rel_diff"]
        cells.append("–" if diff is None or pd.isna(diff) else f"{float(diff):+.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
