"""The output folder's contract: diffmorph never deletes or overwrites a file it did not write, and a run's
outputs appear all together or not at all.

- Ownership: every run lists the outputs it wrote in its ``config.json`` (``"outputs"``). A later run into the
  same folder replaces only those; any other file under a name it would write, a symbolic link, a folder in
  the way of a file, or a ``frames/`` folder holding anything but diffmorph's frames is refused before any
  work. Outputs of the earlier run that this run does not write (another format) are removed with the set they
  belonged to, so the folder never mixes two runs.
- All or nothing: outputs are written into a staging folder inside OUTDIR (``.diffmorph-partial-PID-...``).
  When all are complete, the earlier run's outputs are moved aside, the new ones moved in, and the earlier
  ones deleted; if a move fails, everything is put back as it was.
- Leftovers: staging folders and partial files of a run whose process is gone (killed) are removed by the next
  run in that folder, and only those. A run killed while it moved its outputs into place left a journal of the
  moves in its staging folder; the next run finishes that swap where every new output was in place, and puts
  the earlier set back where not, so a folder always ends with one complete set.
- Names: what a run writes for its formats and segment count (:func:`output_names`), and every name a run of
  any version may have written (:func:`every_output_name`), live here with the contract they serve.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from diffmorph.errors import ConfigError, OutputError
from diffmorph.io.writers import FORMATS, OUTPUT_NAMES

EXPORT_FORMATS = (*FORMATS, "flow")  # "flow": the correspondence as .npy, .flo and a picture, each direction
MAPS_FILE = "maps.safetensors"
PAIR_STILLS = ("a_to_b.png", "b_to_a.png", "maps.png")  # a pair's maps at work; a chain shows its images instead

PARTIAL = ".diffmorph-partial"
MANIFEST = "config.json"
_PARTIAL_NAME = re.compile(rf"^{re.escape(PARTIAL)}-(\d+)-")
_FRAME_NAME = re.compile(r"^frame_\d{5}\.png$")
JOURNAL = ".moves.json"  # in a staging folder while its outputs are moved into place: the names that come in
EARLIER = "-earlier"  # suffix of the staging folder's sibling that holds the earlier set during the swap


def flow_names(segments: int) -> list[str]:
    """The flow files of ``segments`` segments: ``flow_a_to_b.*`` for a pair, ``flow_01_a_to_b.*`` ... else."""
    prefixes = ["flow"] if segments == 1 else [f"flow_{k + 1:02d}" for k in range(segments)]
    return [f"{prefix}_{d}.{ext}" for prefix in prefixes for d in ("a_to_b", "b_to_a") for ext in ("npy", "flo", "png")]


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """Validate and de-duplicate ``formats``, keeping their order."""
    unknown = [kind for kind in formats if kind not in EXPORT_FORMATS]
    if unknown:
        raise ConfigError(f"unknown format {unknown[0]!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if not formats:
        raise ConfigError(f"give at least one format from {', '.join(EXPORT_FORMATS)}")
    return tuple(dict.fromkeys(formats))


def output_names(formats: Sequence[str], segments: int = 1) -> list[str]:
    """Every name :func:`~diffmorph.export` writes for ``formats`` and a morph of ``segments`` segments."""
    names = [OUTPUT_NAMES[kind] for kind in formats if kind in OUTPUT_NAMES]
    names += flow_names(segments) if "flow" in formats else []
    names += list(PAIR_STILLS) if segments == 1 else []
    return [*names, MAPS_FILE, "contact_sheet.png", "config.json"]


def every_output_name() -> list[str]:
    """Every name any run of :func:`~diffmorph.export` may write: how a folder written before runs listed their
    outputs in ``config.json`` is known to be diffmorph's."""
    names = output_names(EXPORT_FORMATS, 1) + output_names(EXPORT_FORMATS, 2)
    return sorted(set(names + [name for k in range(3, 100) for name in flow_names(k)]))


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is deleted."""
    final = Path(path)
    temp = final.with_name(f"{PARTIAL}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        yield temp
        os.replace(temp, final)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {final}: {exc.strerror or exc}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _manifest(folder: Path) -> dict | None:
    """The ``config.json`` an earlier run wrote into ``folder``, or None where there is none of diffmorph's."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "diffmorph_version" in manifest else None


def owned(folder: Path) -> set[str]:
    """The outputs an earlier run wrote into ``folder``, as its ``config.json`` lists them (none without one)."""
    manifest = _manifest(folder)
    if manifest is None:
        return set()
    names = manifest.get("outputs")
    if not isinstance(names, list):  # written before runs listed their outputs: what they always wrote
        names = every_output_name()
    return {name for name in names if isinstance(name, str) and "/" not in name and name not in ("", ".", "..")}


def finished(folder: Path) -> bool:
    """Whether ``folder`` holds a complete output set: its ``config.json`` lists outputs and every one is there
    (the list is written last, so a folder with one holds the whole set)."""
    manifest = _manifest(folder)
    names = manifest.get("outputs") if manifest is not None else None
    return (isinstance(names, list) and bool(names) and owned(folder) == set(names)
            and all((folder / name).exists() for name in names))


def check_output_folder(folder: str | Path, names: Sequence[str] = ()) -> Path:
    """Check that ``folder`` can be created or written and that ``names`` can be written there, before any
    long work starts.

    Args:
        folder: the output folder; it may not exist yet.
        names: the outputs the run will write there.

    Returns:
        The folder as a Path.

    Raises:
        OutputError: naming the path and the reason.
    """
    path = Path(folder)
    if str(folder).strip() == "":
        raise OutputError("the output folder is empty; give one with -o OUTDIR")
    if path.exists() and not path.is_dir():
        raise OutputError(f"output path {path} is a file; give a folder (it is created if missing)")
    probe_dir = path
    while not probe_dir.exists():
        if probe_dir.is_symlink():
            raise OutputError(f"cannot create output folder {path}: {probe_dir} is a broken symbolic link")
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputError(f"cannot create output folder {path}: {probe_dir} is a file")
    try:  # a real write: permission bits say nothing of read-only mounts, /proc, or root
        os.rmdir(tempfile.mkdtemp(prefix=f"{PARTIAL}-{os.getpid()}-probe-", dir=probe_dir))
    except OSError as exc:
        raise OutputError(f"cannot write to {probe_dir}: {exc.strerror or exc}; choose another -o folder") from None
    if not path.exists():
        return path
    ours = owned(path)
    for name in names:
        target = path / name
        if not os.path.lexists(target):
            continue
        if target.is_symlink():
            raise OutputError(f"{target} is a symbolic link; diffmorph does not write through links: move it or "
                              f"choose another -o folder")
        if name not in ours:
            raise OutputError(f"{target} exists and was not written by diffmorph; move it or choose another -o "
                              f"folder")
        if name == "frames":
            others = [entry.name for entry in target.iterdir() if not _FRAME_NAME.match(entry.name)] \
                if target.is_dir() else [name]
            if others:
                raise OutputError(f"{target} holds files diffmorph did not write ({others[0]}); move them or "
                                  f"choose another -o folder")
        elif target.is_dir():
            raise OutputError(f"cannot write {target}: a folder of that name is in the way; move it or choose "
                              f"another -o folder")
    return path


def remove_leftovers(folder: Path) -> None:
    """Remove partial outputs that a killed run left in ``folder`` (their process is gone), after finishing or
    undoing a swap it was killed in (see :func:`_repair`); nothing else."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    dead = [entry for entry in entries
            if (match := _PARTIAL_NAME.match(entry.name)) is not None and not _alive(int(match.group(1)))]
    for staging in dead:
        if not staging.name.endswith(EARLIER):
            _repair(folder, staging, staging.with_name(staging.name + EARLIER))
    for entry in dead:
        _remove(entry)


def _repair(folder: Path, staging: Path, backup: Path) -> None:
    """Finish or undo the swap of a run killed in :meth:`OutputFolder.commit`, from its journal: where every
    new output was moved in (the manifest, moved last, is in place), the swap stands; else the new outputs that
    were moved in go and the earlier ones come back from ``backup``."""
    try:
        journal = json.loads((staging / JOURNAL).read_text())
        staged = [name for name in journal["staged"] if isinstance(name, str) and "/" not in name]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no swap had begun: nothing of the folder's own was moved
    if not any(os.path.lexists(staging / name) for name in staged):
        return  # every new output is in place
    for name in staged:
        if not os.path.lexists(staging / name):  # moved in: it is this run's, not the earlier set's
            _remove(folder / name)
    for path in backup.iterdir() if backup.is_dir() else ():
        os.replace(path, folder / path.name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


class OutputFolder:
    """Collects a run's outputs in a staging folder inside ``folder`` and moves them all into place on success.

    ``names`` are the outputs to come, checked as :func:`check_output_folder` does on entry.

    Use as a context manager: leaving the block normally commits, an exception aborts (the staging folder is
    deleted, and a folder this object created is removed again).

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with OutputFolder(root / "out", ["a.txt"]) as out:
    ...     _ = out.temp("a.txt").write_text("done")
    >>> sorted(p.name for p in (root / "out").iterdir())
    ['a.txt']
    """

    def __init__(self, folder: str | Path, names: Sequence[str] = ()):
        self.folder = Path(folder)
        self._names = list(names)
        self._created: list[Path] = []
        self._staging: Path | None = None
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
            remove_leftovers(self.folder)
            self._staging = self.folder / f"{PARTIAL}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._staging.mkdir()
        except OSError as exc:
            self._created = missing
            self._remove_created()
            raise OutputError(f"cannot write to {self.folder}: {exc.strerror or exc}") from None
        self._created = missing  # deepest first, so they can be removed in order
        return self

    def temp(self, name: str) -> Path:
        """Where to write the output ``name`` (a file, or a folder the caller creates) until the commit."""
        if name not in self._names:
            self._names.append(name)
        return self._staging / name

    def commit(self) -> list[Path]:
        """Move every staged output into place, replacing the earlier run's set; return the final paths.

        Raises:
            OutputError: a move failed; the folder is then as it was before.
        """
        staged = [name for name in self._names if os.path.lexists(self._staging / name)]
        earlier = sorted((owned(self.folder) | set(staged)) - {MANIFEST})
        if MANIFEST in staged:
            earlier.append(MANIFEST)  # out last and in last: a folder caught midway claims nothing of another run
        backup = self._staging.with_name(self._staging.name + EARLIER)
        moved_aside: list[str] = []
        moved_in: list[str] = []
        current = self.folder
        try:
            # The journal first: a run killed from here on is finished or undone by the next (_repair).
            journal = self._staging / f"{JOURNAL}.partial"
            journal.write_text(json.dumps({"staged": staged}))
            os.replace(journal, self._staging / JOURNAL)
            backup.mkdir()
            for name in earlier:
                current = self.folder / name
                if os.path.lexists(current):
                    os.replace(current, backup / name)
                    moved_aside.append(name)
            for name in sorted(staged, key=lambda n: n == MANIFEST):
                current = self.folder / name
                os.replace(self._staging / name, current)
                moved_in.append(name)
        except OSError as exc:
            for name in moved_in:
                _remove(self.folder / name)
            for name in moved_aside:
                os.replace(backup / name, self.folder / name)
            shutil.rmtree(backup, ignore_errors=True)
            raise OutputError(f"cannot write {current}: {exc.strerror or exc}; the folder is as it was") from None
        shutil.rmtree(backup, ignore_errors=True)
        shutil.rmtree(self._staging, ignore_errors=True)
        self.written = [self.folder / name for name in staged]
        return self.written

    def abort(self) -> None:
        """Delete the staging folder, and the folders this object created if they are empty."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
        self._remove_created()

    def _remove_created(self) -> None:
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
            return
        self.abort()
        if isinstance(exc, OSError):
            where = Path(exc.filename) if exc.filename else self.folder
            if self._staging is not None and where.is_relative_to(self._staging):
                where = self.folder / where.relative_to(self._staging)  # the output's own name, not the staging one
            raise OutputError(f"cannot write {where}: {exc.strerror or exc}; nothing was written") from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
