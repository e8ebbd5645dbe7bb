from pathlib import Path

import yaml

from sweep.evaluation.harness import materialise_task_folder


def test_relative_data_files_become_absolute(tmp_path: Path):
    src = tmp_path / "src" / "mytask"
    src.mkdir(parents=True)
    (src / "test.jsonl").write_text('{"q": "x"}\n')
    (src / "mytask.yaml").write_text(
        "task: mytask\ndataset_path: json\n"
        "dataset_kwargs:\n  data_files:\n    test: test.jsonl\n    train: /abs/train.jsonl\n"
    )
    (src / "custom.yaml").write_text("task: other\nprocess_docs: !function utils.process\n")
    out = materialise_task_folder(src, tmp_path / "out")
    config = yaml.safe_load((out / "mytask.yaml").read_text())
    files = config["dataset_kwargs"]["data_files"]
    assert files["test"] == str((src / "test.jsonl").resolve())
    assert files["train"] == "/abs/train.jsonl"
    assert (out / "custom.yaml").read_text() == (src / "custom.yaml").read_text()
    assert (src / "mytask.yaml").read_text().count("test.jsonl") == 1  # source untouched
