"""notebooks/analysis.ipynb runs top to bottom on a small demo study."""

import nbformat
import optuna
import pytest
from nbclient import NotebookClient

from .helpers import REPO

pytestmark = pytest.mark.slow  # a study, then the notebook on it


def test_analysis_notebook_runs_on_a_demo_study(demo_grid_study, monkeypatch):
    url, name, _ = demo_grid_study
    monkeypatch.setenv("SWEEP_STORAGE", url)
    monkeypatch.setenv("SWEEP_STUDY", name)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    notebook = nbformat.read(REPO / "notebooks/analysis.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=300, resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()  # raises CellExecutionError on any failing cell

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert f"{name}: 6 complete trials" in text
    study = optuna.load_study(study_name=name, storage=url)
    best = max(study.best_trials, key=lambda t: t.values[0])
    assert best.user_attrs["config_key"] in text  # the front's table
    assert "rtn-w4-g128-asym" in text and "rel_diff" in text  # the paper's table
    plots = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(plots) == 2  # the front and the per-task bars
