"""A folder that one command owns (`sweep report`'s, `sweep export`'s): a manifest in it lists the
files that command wrote there, and the command touches nothing else.

A folder is accepted when it is new, empty, or holds a manifest of that command and nothing but
the regular files it lists; anything else (a file of the user's, a symbolic link, a folder, a
manifest that cannot be read) is refused, by name. Writing never goes through a symbolic link:
the files are written into a fresh folder beside the target and moved in with ``os.replace``,
which replaces whatever entry has that name (a link planted since the check too) instead of
following it. Only the files written get mode 0644; the earlier files that this run does not
write again are removed, so none outlives its data; the manifest is replaced last, and lists
every file the folder may hold at each step, so that an interrupted write leaves a folder that
the next run accepts.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sweep.errors import UserError

SHARED = 0o644  # some writers create private files; what a command writes is for sharing


@dataclass(frozen=True)
class OwnedFolder:
    """``path``, owned by the command ``owner`` (a word: "report", "export"), whose manifest is
    the file ``manifest`` in it; refusals are raised as ``error``."""

    path: Path
    manifest: str
    owner: str
    error: type[UserError]

    def check(self) -> set[str]:
        """Refuse a folder that this command may not write into; returns the names of the files
        an earlier run wrote there (none for a new or empty folder)."""
        path = self.path
        if path.is_symlink():
            raise self.error(
                f"output {path} is a symbolic link (to {os.readlink(path)}): give the path of "
                f"a real folder, new, empty or holding an earlier {self.owner}"
            )
        if not path.exists():
            return set()
        if not path.is_dir():
            raise self.error(f"output {path} exists and is not a folder")
        entries = sorted(p.name for p in path.iterdir())
        if not entries:
            return set()
        if self.manifest not in entries:
            raise self.error(
                f"output folder {path} is not empty and holds no earlier {self.owner} (no "
                f"{self.manifest}; it holds {entries[0]}): choose an empty or new folder"
            )
        listed = self._listed()
        for name in entries:
            if name == self.manifest:
                continue
            if name not in listed:
                raise self.error(
                    f"output folder {path} holds {name}, which the earlier {self.owner} did not "
                    f"write ({self.manifest} does not list it): move it out or choose an empty "
                    "or new folder"
                )
            odd = _not_regular(path / name)
            if odd:
                raise self.error(
                    f"output folder {path}: {name} is {odd}, and sweep {self.owner} writes only "
                    "regular files there: remove it or choose an empty or new folder"
                )
        return set(entries) - {self.manifest}

    def _listed(self) -> set[str]:
        """The file names the manifest lists; refuses one that no run of this command wrote."""
        manifest = self.path / self.manifest

        def refuse(why: str) -> UserError:
            return self.error(
                f"{manifest} is not a manifest that sweep {self.owner} wrote ({why}): remove the "
                "folder or choose another"
            )

        odd = _not_regular(manifest)
        if odd:
            raise refuse(f"it is {odd}")
        try:
            data = json.loads(manifest.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise refuse(str(err)) from None
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, list) or not all(_plain_name(f) for f in files):
            raise refuse("no list of file names under 'files'")
        return set(files)

    def write(self, fill: Callable[[Path], None], record: Mapping[str, object]) -> list[Path]:
        """Run ``fill`` on an empty staging folder, then put what it wrote into the folder, the
        earlier run's files that it did not write removed, and a manifest holding ``record`` and
        the list of files. Returns the files, the manifest last."""
        target = Path(os.path.abspath(self.path))
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".tmp", dir=target.parent)
        )
        try:
            fill(staging)
            names = _written(staging)
            earlier = self.check()  # again: the folder may have changed while ``fill`` ran
            self._make_folder()
            self._put_manifest(staging, record, sorted(earlier | set(names)))
            for name in names:
                os.replace(staging / name, self.path / name)
            for name in sorted(earlier - set(names)):
                (self.path / name).unlink(missing_ok=True)
            self._put_manifest(staging, record, names)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return [self.path / name for name in (*names, self.manifest)]

    def _make_folder(self) -> None:
        self.path.mkdir(exist_ok=True)
        if not stat.S_ISDIR(os.lstat(self.path).st_mode):  # mkdir(exist_ok) follows a link
            raise self.error(f"output {self.path} became a symbolic link or a file while written")

    def _put_manifest(self, staging: Path, record: Mapping[str, object], files: Iterable[str]):
        draft = staging / self.manifest
        draft.write_text(json.dumps({**record, "files": list(files)}, indent=2) + "\n")
        draft.chmod(SHARED)
        os.replace(draft, self.path / self.manifest)


def _not_regular(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file itself (a symbolic link to one is not)."""
    mode = os.lstat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return f"a symbolic link (to {os.readlink(path)})"
    return "a folder" if stat.S_ISDIR(mode) else "not a regular file"


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


def _written(staging: Path) -> list[str]:
    """The files written into ``staging``, made readable by all; only regular files are expected
    there (the writers are ours)."""
    names = sorted(p.name for p in staging.iterdir())
    for name in names:
        if _not_regular(staging / name):
            raise RuntimeError(f"{name} is not a regular file: an owned folder holds files only")
        (staging / name).chmod(SHARED)
    return names
