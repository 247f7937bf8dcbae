"""Batch morphs on Ray: locally, on a cluster of several nodes, and across a killed driver."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="the batch extra (Ray) is not installed")

from diffmorph.batch import batch  # noqa: E402
from diffmorph.cli import main  # noqa: E402
from diffmorph.config import MorphConfig  # noqa: E402
from diffmorph.errors import ConfigError  # noqa: E402
from diffmorph.io.outputs import finished as complete  # noqa: E402
from diffmorph.reaper import _stat, descendants  # noqa: E402
from synthetic import blobs  # noqa: E402

FAST = MorphConfig(steps=2, refine=0, size=16, frames=3, device="cpu")
FLAGS = ["--steps", "2", "--refine", "0", "--size", "16", "--frames", "3", "--device", "cpu", "--format", "gif",
         "-q"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for index in range(3):
        Image.fromarray(blobs(20, 24, seed=index)).save(folder / f"{index}.png")
    return folder


def manifest(folder: Path, rows: list[str], header: str = "name,image_1,image_2,image_3,frames") -> Path:
    path = folder / "rows.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "batch.jsonl").read_text().splitlines()]


def test_local_rows_resume_and_force(images, tmp_path, capsys):
    rows = manifest(images, ["one,0.png,1.png,,", "two,1.png,2.png,,4", "three,0.png,1.png,2.png,",
                             "broken,0.png,nowhere.png,,"])
    out = tmp_path / "out"
    assert main(["batch", str(rows), "-o", str(out), *FLAGS]) == 1
    assert "1 failed" in capsys.readouterr().err
    assert all(complete(out / name) for name in ("one", "two", "three")) and not (out / "broken").exists()
    statuses = {line["name"]: line["status"] for line in log_lines(out)}
    assert statuses == {"one": "done", "two": "done", "three": "done", "broken": "failed"}
    with Image.open(out / "two" / "morph.gif") as gif:
        assert gif.n_frames == 4  # the row's own frames
    with Image.open(out / "three" / "morph.gif") as gif:
        assert gif.n_frames == 3 + 2  # a chain of two segments
    before = {name: (out / name / "maps.safetensors").stat().st_mtime_ns for name in ("one", "two", "three")}

    results = batch(rows, out, FAST, formats=["gif"])  # again: the finished rows are skipped
    assert [r.status for r in results] == ["skipped", "skipped", "skipped", "failed"]
    assert before == {name: (out / name / "maps.safetensors").stat().st_mtime_ns for name in before}
    results = batch(rows, out, FAST, formats=["gif"], force=True)
    assert [r.status for r in results] == ["done", "done", "done", "failed"]
    assert all((out / name / "maps.safetensors").stat().st_mtime_ns > before[name] for name in before)


@pytest.mark.parametrize(("rows", "header", "message"), [
    (["one,0.png,1.png,,,"], "name,image_1,image_2,image_3,frames,colour", "row 1: unknown column 'colour'"),
    (["one,0.png,1.png,,3", "one,1.png,2.png,,3"], None, "row 3: name 'one' is used twice"),
    (["../up,0.png,1.png,,3"], None, "row 2: name '../up' would not be a folder of its own"),
    (["one,0.png,1.png,,lots"], None, "row 2: frames must be a number"),
    (["one,0.png,1.png,,1"], None, "row 2: --frames must be"),
    (["one,0.png,,,3"], None, "row 2: 1 image(s)"),
])
def test_manifest_errors_refuse_the_batch_before_any_work(images, tmp_path, capsys, rows, header, message):
    path = manifest(images, rows, *([header] if header else []))
    out = tmp_path / "out"
    assert main(["batch", str(path), "-o", str(out), *FLAGS]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_json_lines_rows_with_their_own_options(images, tmp_path):
    path = images / "rows.jsonl"
    path.write_text(json.dumps({"name": "looped", "images": ["0.png", "1.png"], "loop": True, "frames": 3}) + "\n")
    import diffmorph

    (result,) = diffmorph.batch(path, tmp_path / "out", FAST, formats=["gif"])  # the package's own name for it
    assert result.status == "done"
    with Image.open(tmp_path / "out" / "looped" / "morph.gif") as gif:
        assert gif.n_frames == 3 + 2  # there and back again: two segments
    with pytest.raises(ConfigError, match="row 1"):
        path.write_text('{"name": "x"}\n')
        batch(path, tmp_path / "other", FAST)


def test_a_cluster_that_loses_a_worker_node_still_finishes_every_row_once(images, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        rows = manifest(images, [f"row{k},0.png,1.png,,3" for k in range(4)])
        out = tmp_path / "out"
        slow = MorphConfig(steps=120, refine=0, size=32, frames=3, device="cpu")
        finished = []
        runner = threading.Thread(target=lambda: finished.extend(
            batch(rows, out, slow, formats=["gif"], address=cluster.address, retries=3)))
        runner.start()
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".diffmorph-partial") for p in out.rglob("*")) and time.monotonic() < deadline:
            time.sleep(0.1)  # until a job is writing
        cluster.remove_node(workers[0])  # its job dies with it and is tried again on the other node
        runner.join(timeout=300)
        assert not runner.is_alive()
        assert [r.status for r in finished] == ["done"] * 4
        lines = log_lines(out)
        assert sorted(line["name"] for line in lines) == [f"row{k}" for k in range(4)]  # each row once
        for k in range(4):
            assert complete(out / f"row{k}")
            assert not [p for p in (out / f"row{k}").iterdir() if p.name.startswith(".diffmorph-partial")]
    finally:
        cluster.shutdown()


def descendants_start(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[1] if stat else None


def test_a_killed_driver_loses_no_finished_row(images, tmp_path):
    rows = manifest(images, [f"row{k},0.png,1.png,,3" for k in range(4)])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "diffmorph", "batch", str(rows), "-o", str(out), "--steps", "150",
               "--refine", "0", "--size", "32", "--frames", "3", "--device", "cpu", "--format", "gif", "-q"]
    driver = subprocess.Popen(command, start_new_session=True)
    deadline = time.monotonic() + 180
    while not (out / "batch.jsonl").exists() or not (out / "batch.jsonl").read_text().strip():
        assert time.monotonic() < deadline and driver.poll() is None
        time.sleep(0.1)
    started = descendants(driver.pid)  # the Ray it started, the watcher of its own session aside
    assert len(started) > 3
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone: what it started is left to end by itself
    driver.wait()
    deadline = time.monotonic() + 10
    while (alive := {pid for pid, since in started.items() if descendants_start(pid) == since}) and (
            time.monotonic() < deadline):
        time.sleep(0.2)
    assert alive == set(), "processes of the killed batch's Ray are still running 10 s later"
    finished = {line["name"] for line in log_lines(out) if line["status"] == "done"}
    assert finished and all(complete(out / name) for name in finished)
    stamps = {name: (out / name / "maps.safetensors").stat().st_mtime_ns for name in finished}
    assert subprocess.run(command, timeout=300).returncode == 0
    assert all(complete(out / f"row{k}") for k in range(4))
    assert stamps == {name: (out / name / "maps.safetensors").stat().st_mtime_ns for name in finished}
