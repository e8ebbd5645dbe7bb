"""The embedded demo: a small Llama trained on a synthetic corpus, with lm-eval tasks.

`python -m sweep.demo.build` regenerates everything below from a seed.
"""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
MODEL_DIR = DEMO_DIR / "model"
TASKS_DIR = DEMO_DIR / "tasks"
CALIBRATION_FILE = DEMO_DIR / "data" / "calibration.txt"
DEMO_TASKS = ["demo_recall", "demo_arithmetic", "demo_reasoning"]
PERPLEXITY_TASK = "demo_perplexity"

__all__ = [
    "CALIBRATION_FILE",
    "DEMO_DIR",
    "DEMO_TASKS",
    "MODEL_DIR",
    "PERPLEXITY_TASK",
    "TASKS_DIR",
]
