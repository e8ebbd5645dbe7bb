"""A folder that a command owns: what it accepts, what it refuses by name, and a write that never
goes through a symbolic link, never changes a file it did not write, and removes the earlier
run's files that it does not write again."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from sweep.errors import UserError
from sweep.owned_folder import OwnedFolder


class Refused(UserError):
    pass


MANIFEST = "owned.json"


def _owned(path: Path) -> OwnedFolder:
    return OwnedFolder(path, MANIFEST, "export", Refused)


def _writer(**files: str):
    def fill(into: Path) -> None:
        for name, text in files.items():
            (into / name).write_text(text)
            (into / name).chmod(0o600)  # as a writer that makes private files would

    return fill


def _earlier(folder: Path, *names: str) -> None:
    """An earlier run's folder: ``names`` written and listed."""
    folder.mkdir()
    for name in names:
        (folder / name).write_text(f"old {name}")
    (folder / MANIFEST).write_text(json.dumps({"files": list(names)}))


def test_a_new_empty_or_earlier_folder_is_accepted(tmp_path):
    assert _owned(tmp_path / "new").check() == set()
    (tmp_path / "empty").mkdir()
    assert _owned(tmp_path / "empty").check() == set()
    _earlier(tmp_path / "old", "a.txt", "b.txt")
    assert _owned(tmp_path / "old").check() == {"a.txt", "b.txt"}


def test_a_write_lists_what_it_wrote_shares_it_and_removes_the_earlier_leftovers(tmp_path):
    folder = tmp_path / "out"
    _earlier(folder, "a.txt", "stale.txt")
    files = _owned(folder).write(_writer(**{"a.txt": "new a", "c.txt": "c"}), {"who": "me"})
    assert [p.name for p in files] == ["a.txt", "c.txt", MANIFEST]
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "c.txt", MANIFEST]
    assert (folder / "a.txt").read_text() == "new a"
    assert json.loads((folder / MANIFEST).read_text()) == {"who": "me", "files": ["a.txt", "c.txt"]}
    assert all((folder / n).stat().st_mode & 0o777 == 0o644 for n in ("a.txt", "c.txt", MANIFEST))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the staging folder is gone


@pytest.mark.parametrize(
    "plant, says",
    [
        (lambda f: (f / "id_rsa").write_text("key") and (f / "id_rsa").chmod(0o600),
         "holds id_rsa, which the earlier export did not write"),
        (lambda f: (f / "a.txt").unlink() or (f / "a.txt").symlink_to(f.parent / "target"),
         "a.txt is a symbolic link (to"),
        (lambda f: (f / "a.txt").unlink() or (f / "a.txt").mkdir(), "a.txt is a folder"),
        (lambda f: (f / MANIFEST).write_text('{"files": ["a.t'), "is not a manifest"),
        (lambda f: (f / MANIFEST).write_text('{"files": ["../../x"]}'), "no list of file names"),
    ],
    ids=["a user's file", "a listed file that is a link", "a folder", "a truncated manifest",
         "a manifest naming a path"],
)  # fmt: skip
def test_a_folder_holding_anything_else_is_refused_by_name_and_left_alone(tmp_path, plant, says):
    folder = tmp_path / "out"
    _earlier(folder, "a.txt")
    (tmp_path / "target").write_text("the user's")
    plant(folder)
    before = {p.name: (p.is_symlink(), p.is_file() and p.read_text()) for p in folder.iterdir()}
    with pytest.raises(Refused, match=re.escape(says)):
        _owned(folder).write(_writer(**{"a.txt": "new"}), {})
    after = {p.name: (p.is_symlink(), p.is_file() and p.read_text()) for p in folder.iterdir()}
    assert after == before
    assert (tmp_path / "target").read_text() == "the user's"
    if (folder / "id_rsa").exists():
        assert (folder / "id_rsa").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "target"]


def test_a_folder_without_a_manifest_is_refused_naming_what_it_holds(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(Refused, match="not empty and holds no earlier export .no owned.json; it "
                                      "holds notes.txt"):  # fmt: skip
        _owned(folder).check()


def test_an_output_that_is_a_link_is_refused_even_when_it_dangles(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "real").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    for name in ("dangling", "linked"):
        with pytest.raises(Refused, match=f"output {tmp_path / name} is a symbolic link"):
            _owned(tmp_path / name).write(_writer(**{"a.txt": "new"}), {})
    assert not (tmp_path / "nowhere").exists() and not any((tmp_path / "real").iterdir())


def test_a_link_planted_after_the_check_is_replaced_not_written_through(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    _earlier(folder, "README.md")
    outside = tmp_path / "outside.md"
    outside.write_text("the user's")
    os.chmod(outside, 0o600)

    def fill(into: Path) -> None:  # while the files are written, someone plants a link
        (folder / "README.md").unlink()
        (folder / "README.md").symlink_to(outside)
        (into / "README.md").write_text("the card")

    owned = _owned(folder)
    owned.check()
    with pytest.raises(Refused, match="README.md is a symbolic link"):
        owned.write(fill, {})  # checked again before anything moves in
    assert outside.read_text() == "the user's"

    (folder / "README.md").unlink()
    (folder / "README.md").write_text("old")

    def planted_late(into: Path) -> None:
        (into / "README.md").write_text("the card")

    real_replace = os.replace

    def replace_after_a_plant(src, dst):  # the narrowest window: between the check and a move
        if Path(dst) == folder / "README.md":
            Path(dst).unlink()
            Path(dst).symlink_to(outside)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_after_a_plant)
    owned.write(planted_late, {})
    monkeypatch.undo()
    assert outside.read_text() == "the user's" and outside.stat().st_mode & 0o777 == 0o600
    assert not (folder / "README.md").is_symlink()
    assert (folder / "README.md").read_text() == "the card"
