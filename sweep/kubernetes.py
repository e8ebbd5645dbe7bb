"""Kubernetes Jobs of workers: the manifest that ships with sweep
(``sweep/manifests/kubernetes-workers.yaml``: PostgreSQL, and an Indexed Job of workers with one
GPU each, the storage URL from a Secret), and its Job filled in for one study."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

MANIFEST = Path(__file__).parent / "manifests" / "kubernetes-workers.yaml"
GPU = "nvidia.com/gpu"
WORKERS_FILE = "workers.yaml"


def manifest_documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def object_name(study: str) -> str:
    """A Kubernetes name for the study's Job: lower case, digits and '-', at most 63."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"sweep-workers-{study}".lower()).strip("-")
    return name[:63].rstrip("-")


def worker_job(study: str, workers: int, gpus_per_worker: int) -> str:
    """The manifest's Job for ``study``: ``workers`` pods, ``gpus_per_worker`` GPUs each."""
    job = next(d for d in manifest_documents() if d["kind"] == "Job")
    job["metadata"]["name"] = object_name(study)
    spec = job["spec"]
    spec["completions"] = spec["parallelism"] = workers
    container = spec["template"]["spec"]["containers"][0]
    args = container["args"]
    args[args.index("--study") + 1] = study
    limits = container["resources"]["limits"]
    if gpus_per_worker:
        limits[GPU] = gpus_per_worker
    else:
        limits.pop(GPU, None)
    header = (
        f"# sweep workers of study {study} (`sweep submit --kubernetes`): kubectl apply -f this\n"
        "# file once the secret sweep-storage holds the study's URL (see the shipped manifest)\n"
    )
    return header + yaml.safe_dump(job, sort_keys=False)
