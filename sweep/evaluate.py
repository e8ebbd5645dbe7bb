"""Evaluation with lm-eval on the in-memory model: task scores for Sr, and perplexity."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sweep.errors import UserError
from sweep.spec import EvaluationSpec, TaskSpec

METRIC_PREFERENCE = ("acc", "acc_norm", "exact_match")
PERPLEXITY_METRIC = "word_perplexity"


class TaskError(UserError, ValueError):
    """A task that lm-eval does not know, or whose results lack the asked metric."""


def materialise_task_folder(folder: Path, into: Path) -> Path:
    """Copy an lm-eval task folder, making relative ``data_files`` paths absolute.

    lm-eval resolves ``dataset_kwargs.data_files`` against the working directory; a task folder
    that ships its data beside its YAML then works wherever the tool is started.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise TaskError(f"task folder {folder} does not exist")
    dest = into / folder.name
    shutil.copytree(folder, dest, dirs_exist_ok=True)
    for path in dest.rglob("*.yaml"):
        source_dir = folder / path.parent.relative_to(dest)
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue  # YAML with lm-eval's custom tags (!function): leave it as written
        files = (config or {}).get("dataset_kwargs", {}).get("data_files")
        if not isinstance(files, dict):
            continue
        for split, value in files.items():
            if isinstance(value, str) and not Path(value).is_absolute():
                files[split] = str((source_dir / value).resolve())
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def _pick_metric(task: str, result: dict[str, Any], wanted: str | None) -> float:
    available = {k.split(",")[0]: v for k, v in result.items() if "," in k and "stderr" not in k}
    names = [wanted] if wanted else list(METRIC_PREFERENCE)
    for name in names:
        if name in available and isinstance(available[name], (int, float)):
            return float(available[name])
    raise TaskError(
        f"task {task!r} reports no metric {' or '.join(names)}; it reports: "
        f"{', '.join(sorted(available)) or 'nothing'}"
    )


def _random_score(task_obj: Any) -> float:
    """Expected score of uniform guessing: mean of 1/choices for multiple choice, else 0."""
    if getattr(task_obj, "OUTPUT_TYPE", None) != "multiple_choice":
        return 0.0
    docs = list(task_obj.eval_docs)
    if not docs:
        return 0.0
    return sum(1.0 / len(task_obj.doc_to_choice(d)) for d in docs) / len(docs)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """lm-eval's own progress bars and notices, which it prints on stderr whatever its settings
    (about 19 lines a trial), go nowhere: the trial loop shows its own phases."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


@dataclass
class Scores:
    """One evaluation: a score per task (for Sr), and perplexity when the study asks for it."""

    tasks: dict[str, float]
    perplexity: float | None


class Evaluator:
    """Builds lm-eval tasks once, then scores a model (changed in place) as often as asked."""

    def __init__(
        self,
        spec: EvaluationSpec,
        model: Any,
        tokenizer: Any,
        extra_task_folders: list[Path] = (),
        device: str = "cpu",
    ) -> None:
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        self.spec = spec
        self._tmp = tempfile.TemporaryDirectory(prefix="sweep-tasks-")
        folders = list(extra_task_folders)
        if spec.include_path is not None:
            folders.append(spec.include_path)
        include = [
            str(materialise_task_folder(f, Path(self._tmp.name) / str(i)))
            for i, f in enumerate(folders)
        ]
        names = [t.name for t in spec.tasks]
        if spec.perplexity_task:
            names.append(spec.perplexity_task)
        # Indexing lm-eval's own thousands of tasks takes seconds: skip it when local ones suffice.
        manager = TaskManager(include_path=include, include_defaults=False) if include else None
        if manager is None or not set(names) <= set(manager.all_tasks):
            manager = TaskManager(include_path=include or None)
        known = set(manager.all_tasks)
        for name in names:
            if name not in known:
                near = difflib.get_close_matches(name, list(known), n=3)
                hint = f" Did you mean: {', '.join(near)}?" if near else ""
                raise TaskError(f"unknown lm-eval task {name!r}.{hint}")
        with quiet():
            self._task_dicts = {name: manager.load([name]) for name in names}
        self.random_scores = {t.name: self._task_random_score(t) for t in spec.tasks}
        max_length = spec.max_length or getattr(tokenizer, "model_max_length", None)
        if max_length is not None and max_length > 1_000_000:
            max_length = None
        self.lm = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=spec.batch_size,
            max_length=max_length,
            device=device,
        )

    def fingerprint(self) -> str:
        """sha256 of every document the tasks evaluate, so that two machines (or two versions of
        a local task) with other questions under the same task names are told apart."""
        digest = hashlib.sha256(b"sweep-tasks-v1")
        for name in sorted(self._task_dicts):
            leaves = self._task_dicts[name]["tasks"]
            for leaf_name in sorted(leaves):
                digest.update(leaf_name.encode())
                for doc in leaves[leaf_name].eval_docs:
                    digest.update(json.dumps(doc, sort_keys=True, default=str).encode())
        return digest.hexdigest()

    def _task_random_score(self, task: TaskSpec) -> float:
        if task.random_score is not None:
            return task.random_score
        leaves = self._task_dicts[task.name]["tasks"].values()
        sizes = [len(list(leaf.eval_docs)) for leaf in leaves]
        scores = [_random_score(leaf) for leaf in leaves]
        total = sum(sizes)
        return sum(s * n for s, n in zip(scores, sizes, strict=True)) / total if total else 0.0

    def _run(self, name: str) -> dict[str, Any]:
        from lm_eval.evaluator import evaluate

        with quiet():
            out = evaluate(
                self.lm,
                self._task_dicts[name],
                limit=self.spec.limit,
                bootstrap_iters=0,
                log_samples=False,
            )
        return out["results"][name]

    def score(self) -> Scores:
        tasks = {t.name: _pick_metric(t.name, self._run(t.name), t.metric) for t in self.spec.tasks}
        ppl = None
        if self.spec.perplexity_task:
            name = self.spec.perplexity_task
            ppl = _pick_metric(name, self._run(name), PERPLEXITY_METRIC)
        return Scores(tasks=tasks, perplexity=ppl)

    def perplexity(self) -> float:
        """Word perplexity of the model on the spec's ``perplexity_task`` (no other task runs)."""
        name = self.spec.perplexity_task
        if not name:
            raise TaskError("this evaluation has no perplexity_task")
        return _pick_metric(name, self._run(name), PERPLEXITY_METRIC)

    def close(self) -> None:
        self._tmp.cleanup()
