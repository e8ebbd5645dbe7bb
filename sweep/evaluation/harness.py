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
from sweep.evaluation.templates import compile_templates_once
from sweep.spec import AUTO_MIN_DOCS, EvaluationSpec, TaskSpec

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


def _document_text(task: Any, doc: Any) -> str:
    """A document as text: its prompt, followed by its answer when the task names one."""
    parts = []
    for part in (task.doc_to_text(doc), task.doc_to_target(doc)):
        if isinstance(part, int) and task.OUTPUT_TYPE == "multiple_choice":
            part = task.doc_to_choice(doc)[part]
        if isinstance(part, str) and part:
            parts.append(part)
    return " ".join(parts)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """lm-eval's own progress bars and notices, which it prints on stderr whatever its settings
    (about 19 lines a trial), go nowhere: the trial loop shows its own phases."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


DocScores = dict[str, dict[int, float]]  # per leaf task, per document index: its score


def leaf_lists(docs: DocScores) -> dict[str, list[float]]:
    """Each leaf's per-document scores as a list in document order (every document scored)."""
    return {leaf: [scores[i] for i in range(len(scores))] for leaf, scores in docs.items()}


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

        compile_templates_once()
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

    def prompts_fingerprint(self) -> str:
        """sha256 of the tasks' lm-eval configuration: prompt templates, choices, targets,
        metrics and filters (a template edited in place changes what every document asks).
        Where the task's files lie is left out: ``fingerprint`` covers what they hold."""
        digest = hashlib.sha256(b"sweep-task-config-v1")
        for name in sorted(self._task_dicts):
            leaves = self._task_dicts[name]["tasks"]
            for leaf_name in sorted(leaves):
                config = leaves[leaf_name].config.to_dict()
                config.pop("dataset_kwargs", None)
                metadata = dict(config.pop("metadata", None) or {})
                metadata.pop("config_source", None)  # the task folder's temporary copy
                config["metadata"] = metadata
                digest.update(leaf_name.encode())
                digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        return digest.hexdigest()

    def _task_random_score(self, task: TaskSpec) -> float:
        if task.random_score is not None:
            return task.random_score
        leaves = self._task_dicts[task.name]["tasks"].values()
        sizes = [len(list(leaf.eval_docs)) for leaf in leaves]
        scores = [_random_score(leaf) for leaf in leaves]
        total = sum(sizes)
        return sum(s * n for s, n in zip(scores, sizes, strict=True)) / total if total else 0.0

    def _run(
        self, name: str, samples: dict[str, list[int]] | None = None, log: bool = False
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """lm-eval on task ``name``: its results, and with ``log`` each leaf's per-document
        records. ``samples`` restricts leaves to those document indices (then no ``limit``)."""
        from lm_eval.evaluator import evaluate

        with quiet():
            out = evaluate(
                self.lm,
                self._task_dicts[name],
                limit=None if samples is not None else self.spec.limit,
                samples=samples,
                bootstrap_iters=0,
                log_samples=log,
            )
        return out["results"].get(name, {}), out.get("samples") or {}

    def max_length(self) -> int:
        """The longest sequence lm-eval feeds the model (the model's context, or the spec's)."""
        return int(self.lm.max_length)

    def staged(self) -> bool:
        """Whether trials are evaluated in stages (``EvaluationSpec.stages``): ``on``, or
        ``auto`` with every task holding at least ``AUTO_MIN_DOCS`` documents."""
        mode = self.spec.stages.mode
        if mode != "auto":
            return mode == "on"
        return all(sum(self.populations(t.name).values()) >= AUTO_MIN_DOCS for t in self.spec.tasks)

    def is_leaf(self, name: str) -> bool:
        """A plain lm-eval task, not a group of them."""
        loaded = self._task_dicts[name]
        return not loaded.get("groups") and list(loaded["tasks"]) == [name]

    def populations(self, name: str) -> dict[str, int]:
        """Documents each leaf of task ``name`` evaluates (within ``limit``)."""
        leaves = self._task_dicts[name]["tasks"]
        sizes = {leaf: len(list(task.eval_docs)) for leaf, task in leaves.items()}
        if self.spec.limit is not None:
            sizes = {leaf: min(n, self.spec.limit) for leaf, n in sizes.items()}
        return sizes

    def documents(
        self, task: TaskSpec, samples: dict[str, list[int]] | None = None
    ) -> tuple[float | None, DocScores]:
        """Task ``task`` on the documents ``samples`` names per leaf (default: all, within
        ``limit``): lm-eval's own score when every document ran (else None), and every
        document's score by the task's metric."""
        everything = samples is None
        if everything:
            samples = {leaf: list(range(n)) for leaf, n in self.populations(task.name).items()}
        result, logged = self._run(task.name, samples, log=True)
        metric = self._doc_metric(task, logged)
        per_doc = {
            leaf: {int(r["doc_id"]): float(r[metric]) for r in records}
            for leaf, records in logged.items()
        }
        score = _pick_metric(task.name, result, task.metric) if everything and result else None
        return score, per_doc

    def _doc_metric(self, task: TaskSpec, logged: dict[str, list[dict[str, Any]]]) -> str:
        first = next((r for records in logged.values() for r in records), None)
        if first is None:
            raise TaskError(f"task {task.name!r} evaluated no document")
        names = [task.metric] if task.metric else list(METRIC_PREFERENCE)
        for name in names:
            if isinstance(first.get(name), (int, float)):
                return name
        raise TaskError(
            f"task {task.name!r} gives no per-document {' or '.join(names)} (staged "
            "evaluation needs a metric averaged over documents); set evaluation.stages.mode: off"
        )

    def texts(self, limit_chars: int) -> list[str]:
        """Text of the evaluation's documents, for the KL proxy: the perplexity task's when
        there is one, else each task's prompts with their answers; about ``limit_chars``."""
        names = (
            [self.spec.perplexity_task]
            if self.spec.perplexity_task
            else [t.name for t in self.spec.tasks]
        )
        out, total = [], 0
        for name in names:
            for task in self._task_dicts[name]["tasks"].values():
                for doc in task.eval_docs:
                    text = _document_text(task, doc)
                    out.append(text)
                    total += len(text)
                    if total >= limit_chars:
                        return out
        return out

    def score(self) -> Scores:
        tasks = {t.name: self.task_score(t) for t in self.spec.tasks}
        ppl = self.perplexity() if self.spec.perplexity_task else None
        return Scores(tasks=tasks, perplexity=ppl)

    def score_documents(self) -> tuple[Scores, dict[str, DocScores]]:
        """``score``'s scores, and every task's per-document scores beside them (for flips and
        error bars: ``sweep.evaluation.agreement``)."""
        tasks, documents = {}, {}
        for task in self.spec.tasks:
            score, documents[task.name] = self.documents(task)
            tasks[task.name] = score if score is not None else self.task_score(task)
        ppl = self.perplexity() if self.spec.perplexity_task else None
        return Scores(tasks=tasks, perplexity=ppl), documents

    def task_score(self, task: TaskSpec) -> float:
        """lm-eval's score of one task on all its documents (within ``limit``)."""
        return _pick_metric(task.name, self._run(task.name)[0], task.metric)

    def perplexity(self) -> float:
        """Word perplexity of the model on the spec's ``perplexity_task`` (no other task runs)."""
        name = self.spec.perplexity_task
        if not name:
            raise TaskError("this evaluation has no perplexity_task")
        return _pick_metric(name, self._run(name)[0], PERPLEXITY_METRIC)

    def close(self) -> None:
        self._tmp.cleanup()
