"""The web UI through its API, with gradio_client against the app served in this process."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

gradio_client = pytest.importorskip("gradio_client", reason="the web UI's extra is not installed")
pytest.importorskip("gradio", reason="the web UI's extra is not installed")

from diffmorph.pipeline import NOT_RECORDED, MorphResult  # noqa: E402
from diffmorph.ui import UiLimits, gradio_files, serve  # noqa: E402
from diffmorph.visitors import Sessions, safe_name  # noqa: E402
from synthetic import blobs  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
FAST = {"frames": 4, "fps": 10, "steps": 3, "size": 32}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app():
    limits = UiLimits(max_pixels=100_000, max_bytes=1_000_000)
    served = serve(port=free_port(), limits=limits, device="cpu", block=False)
    yield served
    served.close()


@pytest.fixture
def client(app):
    return gradio_client.Client(app.local_url, verbose=False)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for index in range(3):
        paths.append(folder / f"{index}.png")
        Image.fromarray(blobs(40, 48, seed=index)).save(paths[-1])
    return paths


def upload(*paths):
    return [gradio_client.handle_file(str(path)) for path in paths]


def video_frames(path: str) -> tuple[str, int, tuple[int, int]]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, sum(1 for _ in container.decode(video=0)), (stream.width, stream.height)


def session_files(app, client) -> list[Path]:
    folder = app.sessions.root / safe_name(client.session_hash)
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_api_names_its_endpoints_and_parameters(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(endpoints) == {"/morph", "/rerender", "/cancel", "/maps_settings"}
    names = [parameter["parameter_name"] for parameter in endpoints["/morph"]["parameters"]]
    assert names[:3] == ["images", "frames", "fps"] and {"align", "steps", "ease", "seed"} <= set(names)


def test_pair_morph_then_rerender_without_refitting(client, pictures):
    mp4, gif, sheet, summary, maps, _ = client.predict(images=upload(*pictures[:2]), **FAST, api_name="/morph")
    assert video_frames(mp4) == ("h264", 4, (48, 40))
    assert Image.open(sheet).size[0] > 4 * 48  # five frames side by side
    with Image.open(gif) as animation:
        assert animation.n_frames == 4
    assert "4 frames at 10 fps" in summary and "fidelity" in summary
    fitted = MorphResult.load(maps)
    # Uploaded to re-render, a maps file sets the re-render's widgets to its own timing, not the page's defaults.
    settings = client.predict(maps_file=gradio_client.handle_file(maps), api_name="/maps_settings")
    assert tuple(settings[:2]) == (4, 10) and tuple(settings[5:]) == ("sharp", "auto")
    again = client.predict(frames=7, api_name="/rerender")  # the rest: the morph's own, not the page's defaults
    assert video_frames(again[0]) == ("h264", 7, (48, 40))
    assert "7 frames at 10 fps" in again[3]
    refit = MorphResult.load(again[4])  # the same maps: nothing was fitted again
    started = f"segment 1: {fitted.segments[0].describe_start() or 'started from no warp'}"
    assert started in summary.split("\n\n") and started in again[3].split("\n\n")  # the morph's own start
    fresh = gradio_client.Client(client.src, verbose=False).predict(  # another visitor, from the maps file alone
        maps_file=gradio_client.handle_file(maps), frames=5, api_name="/rerender")
    assert started in fresh[3].split("\n\n")
    assert torch.equal(refit.segments[0].maps, fitted.segments[0].maps)
    import zipfile

    with zipfile.ZipFile(again[5]) as archive:
        assert {"morph.mp4", "morph.gif", "maps.safetensors", "config.json", "contact_sheet.png"} <= set(
            archive.namelist())


def test_a_mask_reaches_the_fit(client, pictures, tmp_path):
    region = np.zeros((40, 48), np.uint8)
    region[:, :24] = 255
    Image.fromarray(region).save(tmp_path / "mask.png")
    Image.fromarray(region * 0).save(tmp_path / "empty.png")
    *_, summary, maps, _ = client.predict(images=upload(*pictures[:2]), mask_a=gradio_client.handle_file(
        str(tmp_path / "mask.png")), mask_mode="keep", **FAST, api_name="/morph")
    assert "masked (A's 50% of the frame): kept still" in summary
    assert "kept still" in MorphResult.load(maps).segments[0].describe_start()
    with pytest.raises(gradio_client.exceptions.AppError, match="the mask of B marks nothing"):
        client.predict(images=upload(*pictures[:2]), mask_b=gradio_client.handle_file(str(tmp_path / "empty.png")),
                       **FAST, api_name="/morph")
    with pytest.raises(gradio_client.exceptions.AppError, match="masks and points guide a pair"):
        client.predict(images=upload(*pictures), mask_a=gradio_client.handle_file(str(tmp_path / "mask.png")),
                       **FAST, api_name="/morph")


def test_point_pairs_reach_the_fit(client, pictures):
    *_, summary, maps, _ = client.predict(images=upload(*pictures[:2]), points="10,20,30,20\n5,5,40,5",
                                          **FAST, api_name="/morph")
    assert "2 point pair(s) pinned" in summary
    assert len(MorphResult.load(maps).segments[0].start.points) == 2
    with pytest.raises(gradio_client.exceptions.AppError, match="the point pairs, line 2: give four numbers"):
        client.predict(images=upload(*pictures[:2]), points="10,20,30,20\n5,5", **FAST, api_name="/morph")
    with pytest.raises(gradio_client.exceptions.AppError, match=r"pair 1: \(10, 200\) is outside A"):
        client.predict(images=upload(*pictures[:2]), points="10,200,30,20", **FAST, api_name="/morph")


def test_three_image_chain(client, pictures):
    mp4, *_, summary, maps, _ = client.predict(images=upload(*pictures), **FAST, api_name="/morph")
    assert video_frames(mp4)[1] == 4 + 3 and "2 segment(s)" in summary
    assert len(MorphResult.load(maps).segments) == 2


def test_an_uploaded_maps_file_is_rerendered(client):
    # A fresh session, with nothing morphed: the file alone (written by an earlier format version) is enough.
    mp4, _, _, summary, *_ = client.predict(
        maps_file=gradio_client.handle_file(str(FIXTURES / "pair_v1.safetensors")), frames=5, fps=10,
        api_name="/rerender")
    assert video_frames(mp4) == ("h264", 5, (32, 24))
    assert f"segment 1: {NOT_RECORDED}" in summary  # that format did not store the start: not "no warp"
    with pytest.raises(gradio_client.exceptions.AppError, match="morph some images first"):
        gradio_client.Client(client.src, verbose=False).predict(frames=5, api_name="/rerender")


def _truncated(path: Path) -> None:
    Image.fromarray(blobs(64, 64)).save(path)
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize(("prepare", "message"), [
    (lambda p: p.write_text("not an image at all"), "not an image"),
    (_truncated, "truncated"),
    (lambda p: Image.fromarray(blobs(400, 400)).save(p), "over the limit"),  # 160,000 pixels > 100,000
    (lambda p: p.write_bytes(b"\x89PNG" + b"\x00" * 1_200_000), "maximum file size"),  # 1.2 MB > 1 MB
])
def test_bad_uploads_get_one_line_and_the_server_keeps_serving(client, pictures, tmp_path, prepare, message, capfd):
    bad = tmp_path / "bad.png"
    prepare(bad)
    capfd.readouterr()
    # Gradio itself refuses a file over the size limit (the client checks before sending, the server again).
    with pytest.raises((gradio_client.exceptions.AppError, ValueError), match=message) as caught:
        client.predict(images=upload(pictures[0], bad), **FAST, api_name="/morph")
    assert "\n" not in str(caught.value).strip() and "Traceback" not in str(caught.value)
    if isinstance(caught.value, gradio_client.exceptions.AppError):  # the server's answer, not the client's check
        assert "/bad.png" not in str(caught.value)  # named as the visitor named it, not by the server's path
        logged = capfd.readouterr().err
        assert "Traceback" not in logged and logged.count("diffmorph ui: ") == 1, logged  # one line in its log
    with pytest.raises(gradio_client.exceptions.AppError, match="at least two images"):
        client.predict(images=upload(pictures[0]), **FAST, api_name="/morph")
    mp4, *_ = client.predict(images=upload(*pictures[:2]), **FAST, api_name="/morph")  # still serving
    assert video_frames(mp4)[1] == 4


def test_a_cancelled_job_stops_and_leaves_no_files(app, client, pictures):
    job = client.submit(images=upload(*pictures[:2]), frames=4, fps=10, steps=5000, size=32, api_name="/morph")
    deadline = time.monotonic() + 60
    while not (job.status().progress_data or []) and time.monotonic() < deadline:  # wait for the fit's steps
        time.sleep(0.2)
    assert job.status().progress_data, "the fit never reported progress"
    started = time.monotonic()
    client.predict(api_name="/cancel")
    with pytest.raises(Exception, match="cancelled"):
        job.result(timeout=60)
    assert time.monotonic() - started < 30  # stopped at a step, not after 5000 of them
    assert [path for path in session_files(app, client) if path.is_file()] == []
    mp4, *_ = client.predict(images=upload(*pictures[:2]), **FAST, api_name="/morph")  # the worker is free again
    assert video_frames(mp4)[1] == 4


def test_a_client_s_cancel_stops_the_work(app, pictures):
    # gradio_client's Job.cancel ends the event in Gradio's queue, not the thread computing it: the job checks.
    own = gradio_client.Client(app.local_url, verbose=False)
    job = own.submit(images=upload(*pictures[:2]), frames=4, fps=10, steps=5000, size=32, api_name="/morph")
    deadline = time.monotonic() + 60
    while not (job.status().progress_data or []) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert safe_name(own.session_hash) in app.sessions.running, "the fit never started"
    job.cancel()
    deadline = time.monotonic() + 3
    while safe_name(own.session_hash) in app.sessions.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert safe_name(own.session_hash) not in app.sessions.running  # stopped within 3 s, not after 5000 steps
    assert [path for path in session_files(app, own) if path.is_file()] == []
    cpu = time.process_time()  # the server runs in this process: its threads' CPU time, the clients' included
    time.sleep(6)
    assert time.process_time() - cpu < 1.5, "the server kept computing after the client's cancel"


def test_a_closed_session_s_files_are_removed(app, pictures):
    own = gradio_client.Client(app.local_url, verbose=False)
    own.predict(images=upload(*pictures[:2]), **FAST, api_name="/morph")
    assert session_files(app, own)
    app.sessions.close(own.session_hash)
    assert not (app.sessions.root / safe_name(own.session_hash)).exists()
    assert safe_name("../../etc/passwd") == "etcpasswd"  # a session id never names a path elsewhere


def test_a_stopped_server_leaves_none_of_its_files(pictures):
    served = serve(port=free_port(), limits=UiLimits(max_pixels=100_000), device="cpu", block=False)
    own = gradio_client.Client(served.local_url, verbose=False)
    own.predict(images=upload(*pictures[:2]), **FAST, api_name="/morph")
    made = gradio_files(served)
    assert len(made) >= 6 and all(path.exists() for path in made)  # two uploads, the outputs, the demo pair
    assert any(path.name == "sunset.png" for path in made)
    served.close()
    assert not served.sessions.root.exists()
    assert [path for path in made if path.exists() or path.parent.exists()] == []


def test_sessions_past_the_disk_limit_go_longest_idle_first(tmp_path):
    sessions = Sessions(UiLimits(disk_bytes=2500))
    try:
        for index, name in enumerate(("first", "second", "third")):
            (sessions.folder(name) / "out.bin").write_bytes(bytes(1000))
            idle = time.time() - 30 + index  # idle since, in this order, and not for long
            os.utime(sessions.root / name, (idle, idle))
        sessions.running.add("first")  # computing: kept however long idle
        sessions.sweep()
        assert sorted(path.name for path in sessions.root.iterdir()) == ["first", "third"]
    finally:
        sessions.remove_all()
    assert not sessions.root.exists()


def test_the_served_command_leaves_nothing_when_stopped(pictures, tmp_path):
    # `diffmorph ui` as a user runs it, stopped as a service manager stops it: its temporary folder ends empty.
    served = tmp_path / "tmp"
    served.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(served)}
    env.pop("GRADIO_TEMP_DIR", None)
    server = subprocess.Popen([sys.executable, "-m", "diffmorph", "ui", "--port", str(port), "--device", "cpu"],
                              env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in server.stderr:
            if "serving on" in line:
                break
        own = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        own.predict(images=upload(*pictures[:2]), **FAST, api_name="/morph")
        assert any(path.name == "morph.mp4" for path in served.rglob("*"))
        own.close()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        assert list(served.rglob("*")) == []
    finally:
        server.kill()
