"""Batch morphs on Ray: a manifest of rows, each row a morph into its own folder, local or on a cluster.

A manifest is CSV (columns ``name``, ``image_1``, ``image_2``, ... and any option named as the CLI's, e.g.
``frames``, ``fps``, ``loop``, ``align``) or JSON Lines (``{"name": ..., "images": [...], "frames": 60}``).
Image paths are relative to the manifest's folder. Each row's outputs go to ``OUTDIR/<name>/``, exactly what
``diffmorph morph`` writes there, all or nothing; ``OUTDIR/batch.jsonl`` gets one line per row as it ends.

Engine: Ray. With no address a private local Ray is started (the machine's cores, no dashboard) and shut down
at the end; an address (``auto``, ``ray://host:10001``) or ``RAY_ADDRESS`` joins an existing cluster, whose
nodes must all see the image paths and OUTDIR and have diffmorph installed. A job whose worker dies is retried;
a row that fails by its own fault (a bad image, a diverged fit) is recorded and not retried.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffmorph.allocator import keep_freed_memory
from diffmorph.config import DEFAULT_FORMATS, MorphConfig
from diffmorph.errors import ConfigError, DiffmorphError
from diffmorph.options import COLUMNS, FIELDS
from diffmorph.reaper import start_watching

if TYPE_CHECKING:
    from diffmorph.plan import Plan

LOG = "batch.jsonl"


@dataclass(frozen=True)
class Row:
    """One morph of the batch: ``images`` (absolute paths) into ``OUTDIR/name`` as ``plan`` says (its device is
    resolved on the worker that runs it)."""

    number: int  # the row's number in the manifest, for messages (CSV: the header is row 1)
    name: str
    images: tuple[str, ...]
    plan: Plan


@dataclass(frozen=True)
class RowResult:
    """How one row ended: ``status`` is "done", "failed" or "skipped"."""

    name: str
    status: str
    error: str | None = None
    fit_seconds: float | None = None
    render_seconds: float | None = None
    fidelity: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


def read_manifest(path: str | Path, defaults: MorphConfig, *, loop: bool = False, pingpong: bool = False,
                  formats: Sequence[str] = DEFAULT_FORMATS) -> list[Row]:
    """Every row of a manifest, checked before any work.

    Raises:
        ConfigError: the manifest itself is wrong (unknown column, bad value, duplicate name, a name that would
            leave OUTDIR, fewer than two images), naming each problem's row.
    """
    from diffmorph.io.images import regular_file
    from diffmorph.plan import make_plan

    path = Path(path)
    regular_file(path, f"manifest {path}", ConfigError, max_bytes=64 * 2**20)
    base = path.parent.resolve()
    problems: list[str] = []
    rows: list[Row] = []
    seen: set[str] = set()
    for number, record in _records(path, problems):
        try:
            name = str(record.pop("name", "") or "").strip()
            images = record.pop("images")
            if not name:
                raise ConfigError("no name")
            if name in (".", "..") or "/" in name or "\\" in name or name.startswith(".") or name == LOG:
                raise ConfigError(f"name {name!r} would not be a folder of its own inside OUTDIR")
            if name in seen:
                raise ConfigError(f"name {name!r} is used twice")
            seen.add(name)
            if len(images) < 2:
                raise ConfigError(f"{len(images)} image(s); a morph needs at least 2")
            options = {key.replace("-", "_"): value for key, value in record.items()}
            unknown = sorted(set(options) - set(FIELDS) - set(COLUMNS))
            if unknown:
                raise ConfigError(f"unknown option {unknown[0]!r}")
            own = {"loop": loop, "pingpong": pingpong, "format": list(formats)}
            for key in COLUMNS:
                if key in options:
                    own[key] = _parse(key, options.pop(key))
            config = dataclasses.replace(defaults, **{k: _parse(k, v) for k, v in options.items()})
            plan = make_plan(config, len(images), loop=own["loop"], formats=own["format"], pingpong=own["pingpong"],
                             resolve=False)
            rows.append(Row(number, name, tuple(str(base / image) for image in images), plan))
        except (ConfigError, ValueError, TypeError) as exc:
            problems.append(f"row {number}: {str(exc).splitlines()[0]}")
    if problems:
        raise ConfigError(f"manifest {path}: {'; '.join(problems[:5])}"
                          + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))
    if not rows:
        raise ConfigError(f"manifest {path} has no rows")
    return rows


def _records(path: Path, problems: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """``(row number, {"name", "images", options...})`` per row of a CSV or JSON Lines manifest."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    records = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("images"), list):
                    raise ValueError('each line must be an object with a list "images"')
            except ValueError as exc:
                problems.append(f"row {number}: {str(exc).splitlines()[0]}")
                continue
            records.append((number, {**record, "images": [str(image) for image in record["images"]]}))
        return records
    reader = csv.DictReader(text.splitlines())
    columns = reader.fieldnames or []
    numbered = sorted((int(c[6:]), c) for c in columns if c.startswith("image_") and c[6:].isdigit())
    known = {"name", *(c for _, c in numbered), *FIELDS, *COLUMNS}
    for column in columns:
        if column.replace("-", "_") not in known:
            problems.append(f"row 1: unknown column {column!r}")
    for number, record in enumerate(reader, start=2):
        if None in record:
            problems.append(f"row {number}: more cells than columns")
            continue
        images = [record.pop(column) for _, column in numbered]
        options = {key: value for key, value in record.items() if value not in ("", None)}
        records.append((number, {**options, "images": [image for image in images if image]}))
    return records


def _parse(name: str, value: Any) -> Any:
    """A manifest's value (a CSV string, or a JSON value) as the option's type."""
    if name in ("loop", "pingpong", "add_first"):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return text in ("true", "1", "yes")
    if name == "format":
        return [part for part in (value if isinstance(value, list) else str(value).replace(",", " ").split()) if part]
    kind = FIELDS[name].type
    try:
        if name == "durations":
            return tuple(float(v) for v in (value if isinstance(value, list) else str(value).split()))
        if kind == "int":
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind in ("float", "float | None"):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    return str(value)


def run_row(row: Row, outdir: str, max_pixels: int, threads: int | None = None, gpus: bool = True) -> RowResult:
    """Morph one row into ``outdir/row.name`` (on whatever worker runs it); a failure of the row's own is
    returned, not raised, so that it is not retried.

    Args:
        threads: the cores this row was given, unless the row asks for its own count.
        gpus: whether this worker was given a GPU; without one, "auto" means the CPU.
    """
    from diffmorph.export import export
    from diffmorph.pipeline import morph

    plan = row.plan
    if threads and not plan.config.threads:
        plan = dataclasses.replace(plan, config=dataclasses.replace(plan.config, threads=threads))
    if not gpus and plan.config.device == "auto":
        plan = dataclasses.replace(plan, config=dataclasses.replace(plan.config, device="cpu"))
    try:
        plan = plan.resolved()
        result = morph(list(row.images), plan=plan, max_pixels=max_pixels)
        report = export(result, Path(outdir) / row.name, plan=plan)
    except (DiffmorphError, MemoryError) as exc:
        return RowResult(row.name, "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return RowResult(row.name, "done", fit_seconds=sum(s.fit_seconds for s in result.segments),
                     render_seconds=report.seconds["render_and_encode"], fidelity=report.fidelity)


def _remote_row(row: Row, outdir: str, max_pixels: int) -> RowResult:
    """:func:`run_row` inside a Ray task: torch's threads set to the task's share of the CPUs, the device to the
    GPU Ray gave it, if any."""
    import ray

    keep_freed_memory()  # a worker is a process of its own
    assigned = ray.get_runtime_context().get_assigned_resources()
    threads = max(1, math.floor(assigned.get("CPU", 1)))
    return run_row(row, outdir, max_pixels, threads, gpus=bool(ray.get_gpu_ids()))


def batch(manifest: str | Path, outdir: str | Path, config: MorphConfig | None = None, *, loop: bool = False,
          pingpong: bool = False, formats: Sequence[str] = DEFAULT_FORMATS, address: str | None = None,
          cpus_per_job: float = 1.0, gpus_per_job: float = 0.0, retries: int = 2, force: bool = False,
          max_pixels: int | None = None, on_start: Callable[[int], None] | None = None,
          on_row: Callable[[RowResult], None] | None = None) -> list[RowResult]:
    """Run every row of ``manifest`` on Ray; return one result per row, in the manifest's order.

    Args:
        config: every row's defaults; a row's own options override them.
        address: a Ray cluster to join (``auto``, ``ray://host:10001``); None: ``RAY_ADDRESS``, or a private
            local Ray that is shut down at the end.
        cpus_per_job, gpus_per_job: what each row asks of Ray (a fraction of a GPU runs several fits on one).
        retries: how often a row whose worker died is tried again.
        force: redo rows whose folders are already complete (by default they are skipped).
        on_start: called with the number of rows once the manifest is read and checked.
        on_row: called with each row's result as it ends (also for skipped and failed rows).

    Raises:
        ConfigError: the manifest or the settings are wrong; nothing was run.
    """
    from diffmorph.config import DEFAULT_MAX_PIXELS
    from diffmorph.io.images import regular_file
    from diffmorph.io.outputs import check_output_folder, finished

    if not cpus_per_job > 0 or not gpus_per_job >= 0 or retries < 0:
        raise ConfigError("--cpus-per-job must be above 0, --gpus-per-job at least 0 and --retries at least 0")
    defaults = (config or MorphConfig()).validate()
    rows = read_manifest(manifest, defaults, loop=loop, pingpong=pingpong, formats=formats)
    out = check_output_folder(outdir)
    if on_start is not None:
        on_start(len(rows))
    out.mkdir(parents=True, exist_ok=True)
    pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    results: dict[str, RowResult] = {}
    pending: list[Row] = []
    with open(out / LOG, "a", encoding="utf-8") as log:
        def record(result: RowResult) -> None:
            results[result.name] = result
            log.write(result.to_json() + "\n")
            log.flush()
            os.fsync(log.fileno())  # a driver killed at any moment loses no finished row
            if on_row is not None:
                on_row(result)

        for row in rows:
            if not force and finished(out / row.name):
                record(RowResult(row.name, "skipped"))
                continue
            try:
                check_output_folder(out / row.name)
                for number, image in enumerate(row.images, start=1):
                    regular_file(Path(image), f"image {number} ({image})")
            except DiffmorphError as exc:
                record(RowResult(row.name, "failed", str(exc)))
                continue
            pending.append(row)
        if pending:
            _run_on_ray(pending, str(out.resolve()), pixels, address, cpus_per_job, gpus_per_job, retries, record)
    return [results[row.name] for row in rows]


def _run_on_ray(rows: list[Row], outdir: str, max_pixels: int, address: str | None, cpus: float, gpus: float,
                retries: int, record: Callable[[RowResult], None]) -> None:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"batch needs Ray ({exc.name} is missing): pip install 'diffmorph[batch]'") from None
    address = address or os.environ.get("RAY_ADDRESS")
    private = address is None
    watcher = start_watching() if private else None  # ends the private Ray however this process ends
    try:
        if private:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", object_store_memory=200 * 2**20)
        else:
            try:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
        _run_rows(ray, rows, outdir, max_pixels, cpus, gpus, retries, record)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if watcher is not None:
            watcher.terminate()  # it ends what the shutdown left
            watcher.wait()


def _run_rows(ray: Any, rows: list[Row], outdir: str, max_pixels: int, cpus: float, gpus: float, retries: int,
              record: Callable[[RowResult], None]) -> None:
    """Every row as a Ray task, each result recorded as it ends."""
    task = ray.remote(_remote_row).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries, retry_exceptions=False)
    running = {task.remote(row, outdir, max_pixels): row for row in rows}
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        row = running.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except (ray.exceptions.RayError, OSError) as exc:  # the worker died more often than retried, or a bug
            result = RowResult(row.name, "failed", f"the job failed: {str(exc).splitlines()[0]}")
        record(result)


def summary(results: Sequence[RowResult], seconds: float) -> str:
    """One line: how many rows were done, failed and skipped."""
    counts = {status: sum(r.status == status for r in results) for status in ("done", "failed", "skipped")}
    return (f"batch: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped in "
            f"{time.strftime('%H:%M:%S', time.gmtime(seconds))}")
