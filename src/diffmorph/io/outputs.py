"""An output folder written as a transaction: every file under a temporary name, renamed when all are done.

A failed or interrupted run leaves the folder as it was: no half-written video, no partial frames.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from diffmorph.errors import OutputError

_PARTIAL = ".diffmorph-partial"


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is deleted."""
    final = Path(path)
    temp = final.with_name(f"{_PARTIAL}-{os.getpid()}-{final.name}")
    try:
        yield temp
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def check_output_folder(folder: str | Path, names: list[str] | tuple[str, ...] = ()) -> Path:
    """Check that ``folder`` can be created or written, before any long work starts.

    Args:
        folder: the output folder; it may not exist yet.
        names: files the run will write there; an existing folder under one of those names (other
            than ``frames``) is an error, since it cannot be replaced by a file.

    Returns:
        The folder as a Path.

    Raises:
        OutputError: naming the folder and the reason.
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output path {path} is a file; give a folder (it is created if missing)")
    probe_dir = path
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputError(f"cannot create output folder {path}: {probe_dir} is a file")
    try:
        probe = tempfile.mkdtemp(prefix=_PARTIAL + "-probe-", dir=probe_dir)
        os.rmdir(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to {probe_dir}: {exc.strerror or exc}; choose another -o folder") from None
    for name in names:
        target = path / name
        if name != "frames" and target.is_dir():
            raise OutputError(f"cannot write {target}: a folder of that name is in the way; move it or choose "
                              f"another -o folder")
    return path


class OutputFolder:
    """Collects outputs under temporary names in ``folder`` and renames them all on success.

    ``names`` are the outputs to come, checked as :func:`check_output_folder` does on entry.

    Use as a context manager: leaving the block normally commits, an exception aborts (temporary
    files are deleted, and a folder this object created is removed again).

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with OutputFolder(root / "out") as out:
    ...     _ = out.temp("a.txt").write_text("done")
    >>> sorted(p.name for p in (root / "out").iterdir())
    ['a.txt']
    """

    def __init__(self, folder: str | Path, names: list[str] | tuple[str, ...] = ()):
        self.folder = Path(folder)
        self._names = names
        self._created: list[Path] = []
        self._pending: dict[str, Path] = {}
        self.written: list[Path] = []

    def __enter__(self) -> OutputFolder:
        check_output_folder(self.folder, self._names)
        missing = []
        parent = self.folder
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {self.folder}: {exc.strerror or exc}") from None
        self._created = missing  # deepest first, so they can be removed in order
        return self

    def temp(self, name: str) -> Path:
        """A temporary path for the output ``name`` (a file, or a folder the caller creates)."""
        path = self.folder / f"{_PARTIAL}-{os.getpid()}-{name}"
        self._pending[name] = path
        return path

    def commit(self) -> list[Path]:
        """Rename every temporary output to its final name; return the final paths."""
        for name, temp in self._pending.items():
            final = self.folder / name
            try:
                if temp.is_dir() and final.is_dir():
                    shutil.rmtree(final)
                os.replace(temp, final)
            except OSError as exc:
                raise OutputError(f"cannot write {final}: {exc.strerror or exc}") from None
            self.written.append(final)
        self._pending.clear()
        return self.written

    def abort(self) -> None:
        """Delete every temporary output, and the folders this object created if they are empty."""
        for temp in self._pending.values():
            if temp.is_dir():
                shutil.rmtree(temp, ignore_errors=True)
            else:
                temp.unlink(missing_ok=True)
        self._pending.clear()
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()
