"""``python -m deepfake detect|scan``: mixed folders, bad files skipped, the export schema, exit codes;
``scan --server`` against real servers (``python -m deepfake serve``)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import cv2
import httpx
import pytest
from conftest import face_frames, make_clip
from provenance_samples import LEAKED_COORDINATES, signed_ai_photo_with_gps, signer_keys
from test_api import _start, _stop, _wait_ready

from deepfake import ImageDeepfakeDetector, VideoDeepfakeDetector
from deepfake.exports import history_csv
from deepfake.interfaces.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE, main
from deepfake.interfaces.scanning import ScanOptions, find_files, scan_local
from deepfake.results import HISTORY_COLUMNS, history_row_of

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def media(tmp_path_factory, hopper_jpeg_bytes, astronaut_rgb, synthetic_clip) -> Path:
    """photos/: two images, a broken JPEG, text named .jpg, a non-media file; nested/: a clip."""
    root = tmp_path_factory.mktemp("photos")
    (root / "nested").mkdir()
    (root / "hopper.jpg").write_bytes(hopper_jpeg_bytes)
    cv2.imwrite(str(root / "astronaut.png"), cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2BGR))
    (root / "broken.jpg").write_bytes(hopper_jpeg_bytes[:3000])
    (root / "README.md").write_text("not scanned: not a media extension")
    (root / "nested" / "clip.mp4").write_bytes(synthetic_clip)
    (root / "nested" / "notes.jpg").write_text("a text file with an image's name\n")
    return root


@pytest.fixture(scope="module")
def scanned(media, random_checkpoint, tmp_path_factory) -> dict:
    """One recursive scan with 2 workers, every output on; what it printed and wrote."""
    out = tmp_path_factory.mktemp("scan")
    capture = pytest.MonkeyPatch()
    args = ["scan", str(media), "--recursive", "--model", str(random_checkpoint), "--workers", "2", "--num-frames", "8",
            "--csv", str(out / "r.csv"), "--json", str(out / "r.json"), "--heatmaps", str(out / "heatmaps")]  # fmt: skip
    stdout, stderr = out / "stdout", out / "stderr"
    with stdout.open("w") as o, stderr.open("w") as e:
        capture.setattr(sys, "stdout", o)
        capture.setattr(sys, "stderr", e)
        try:
            code = main(args)
        finally:
            capture.undo()
    return {"code": code, "out": out, "stdout": stdout.read_text(), "stderr": stderr.read_text(),
            "json": json.loads((out / "r.json").read_text()), "csv": (out / "r.csv").read_bytes().decode()}  # fmt: skip


def test_find_files(media):
    top = find_files([str(media)], recursive=False)
    assert [Path(p).name for p in top] == ["astronaut.png", "broken.jpg", "hopper.jpg"]
    deep = find_files([str(media), str(media / "hopper.jpg"), "missing.jpg"], recursive=True)
    assert [Path(p).name for p in deep] == ["astronaut.png", "broken.jpg", "hopper.jpg", "clip.mp4", "notes.jpg",
                                            "missing.jpg"]  # fmt: skip


def test_scan_reports_and_skips_bad_files(scanned, media):
    assert scanned["code"] == EXIT_SOME_FAILED
    rows = scanned["json"]["rows"]
    names = [Path(r["file_name"]).relative_to(media).as_posix() for r in rows]
    assert names == ["astronaut.png", "broken.jpg", "hopper.jpg", "nested/clip.mp4", "nested/notes.jpg"]
    by_name = dict(zip(names, rows))
    assert by_name["broken.jpg"]["verdict"] == "ERROR" and "truncated or corrupt" in by_name["broken.jpg"]["error"]
    assert by_name["broken.jpg"]["media_type"] == "image"  # it was recognised, then failed to decode
    assert "not an image or a video" in by_name["nested/notes.jpg"]["error"]
    assert by_name["nested/clip.mp4"]["media_type"] == "video" and by_name["nested/clip.mp4"]["frames"] == 8
    for name in ("astronaut.png", "hopper.jpg", "nested/clip.mp4"):
        assert by_name[name]["verdict"] in ("REAL", "FAKE", "NO FACE") and by_name[name]["error"] == ""

    summary = scanned["stdout"]
    assert "Scanned 5 files" in summary and "Failed (2):" in summary and "Most suspicious:" in summary
    assert "broken.jpg" in summary and "notes.jpg" in summary
    assert "5/5" in scanned["stderr"]  # the progress bar


def test_scan_outputs_share_the_export_schema(scanned):
    payload = scanned["json"]
    assert payload["schema"] == list(HISTORY_COLUMNS)
    assert scanned["csv"] == history_csv(payload["rows"])  # streamed CSV == the exports' CSV
    assert list(csv.DictReader(scanned["csv"].splitlines()))[0].keys() == set(HISTORY_COLUMNS)
    results = payload["results"]
    assert [r["media_type"] for r in results] == ["image", "image", "video"]  # failures have a row, no result
    for result in results:  # Grad-CAM overlays were written where asked
        overlay = Path(result["heatmap_overlay_path"])
        assert overlay.parent == scanned["out"] / "heatmaps" and overlay.is_file()


def test_scan_matches_the_detector_and_all_good_exits_0(scanned, media, random_checkpoint, engine, capsys):
    direct = ImageDeepfakeDetector(engine=engine).detect(media / "hopper.jpg", explain=False)
    by_name = {Path(r["file_name"]).name: r for r in scanned["json"]["rows"]}
    assert by_name["hopper.jpg"]["fake_probability"] == pytest.approx(direct.fake_probability, abs=1e-6)

    files = [str(media / "hopper.jpg"), str(media / "nested" / "clip.mp4")]
    code = main(["scan", *files, "--model", str(random_checkpoint), "--workers", "1", "--num-frames", "8", "-q"])
    assert code == EXIT_OK
    printed = capsys.readouterr().out
    assert "Scanned 2 files" in printed and "Failed" not in printed
    # One worker or two: the same numbers.
    for name in ("hopper.jpg", "clip.mp4"):
        line = next(x for x in printed.splitlines() if x.rstrip().endswith(name))
        assert float(line.split()[0]) == pytest.approx(float(by_name[name]["fake_probability"]), abs=1e-4)


def test_scan_local_keeps_input_order(engine, media):
    files = [str(media / n) for n in ("hopper.jpg", "broken.jpg", "astronaut.png", "hopper.jpg")]
    outcomes = list(scan_local(files, engine, ScanOptions(), workers=1))  # a window of 2 in flight: it slides
    assert [o.index for o in outcomes] == [0, 1, 2, 3]
    assert [o.row["file_name"] for o in outcomes] == files
    assert outcomes[1].result is None and outcomes[0].result["sha256"] == outcomes[3].result["sha256"]


def test_unusable_runs_exit_2(tmp_path, media, random_checkpoint, capsys):
    assert main(["scan", str(tmp_path), "--model", str(random_checkpoint)]) == EXIT_UNUSABLE
    assert "no images or videos found" in capsys.readouterr().err
    assert main(["scan", str(media), "--model", str(tmp_path / "absent.pth")]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert "Model file not found" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as usage:
        main(["scan", str(media), "--threshold", "1.5"])
    assert usage.value.code == EXIT_UNUSABLE


def test_detect_prints_the_result(media, random_checkpoint, tmp_path):
    """Through the real entry point, ``python -m deepfake``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPFAKE_MODEL": str(random_checkpoint)}  # the model from the env
    done = subprocess.run([sys.executable, "-m", "deepfake", "detect", str(media / "hopper.jpg"),
                           "--heatmaps", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith(f"{media / 'hopper.jpg'}: ") and "fake probability" in first
    assert "image 512x600, 1 face(s)" in done.stdout and "heatmap: " + str(tmp_path) in done.stdout


def test_detect_json_and_bad_file(media, random_checkpoint, capsys):
    assert main(["detect", str(media / "nested" / "clip.mp4"), "--model", str(random_checkpoint), "--json",
                 "--num-frames", "4", "--no-explain"]) == EXIT_OK  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["media_type"] == "video" and result["frames_analyzed"] == 4 and result["cam_method"] is None
    assert main(["detect", str(media / "broken.jpg"), "--model", str(random_checkpoint)]) == EXIT_SOME_FAILED
    assert "truncated or corrupt" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_and_evaluate_are_delegated(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert f"python -m deepfake.{command}" in capsys.readouterr().out


@pytest.fixture(scope="module")
def provenance_media(tmp_path_factory, hopper_jpeg_bytes) -> Path:
    root = tmp_path_factory.mktemp("provenance")
    (root / "generated.jpg").write_bytes(signed_ai_photo_with_gps(hopper_jpeg_bytes))
    (root / "hopper.jpg").write_bytes(hopper_jpeg_bytes)
    (root / "anchors.pem").write_bytes(signer_keys().ca_pem)
    return root


def test_scan_has_an_evidence_column_and_keeps_coordinates_home(provenance_media, random_checkpoint, tmp_path, capsys):
    args = ["scan", str(provenance_media / "generated.jpg"), str(provenance_media / "hopper.jpg"), "--model",
            str(random_checkpoint), "--threshold", "1", "--csv", str(tmp_path / "r.csv"), "--json",
            str(tmp_path / "r.json"), "--quiet"]  # fmt: skip
    assert main(args) == EXIT_OK
    summary = capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "r.csv").read_text().splitlines()))
    assert [r["verdict"] for r in rows] == ["FAKE", "REAL"]  # threshold 1: only the declaration makes a FAKE
    assert "trainedAlgorithmicMedia" in rows[0]["decided_by"] and "generated by AI" in rows[0]["evidence"]
    assert "[decided by c2pa: " in summary.split("Most suspicious:")[1].splitlines()[1]
    for written in ((tmp_path / "r.csv").read_text(), (tmp_path / "r.json").read_text()):
        assert not any(c in written for c in LEAKED_COORDINATES)
    assert main([*args, "--include-location"]) == EXIT_OK
    assert LEAKED_COORDINATES[0] in (tmp_path / "r.json").read_text()


def test_detect_prints_the_evidence_and_takes_trust_anchors(provenance_media, random_checkpoint, capsys):
    file = str(provenance_media / "generated.jpg")
    assert main(["detect", file, "--model", str(random_checkpoint), "--no-explain"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "Evidence (the verdict was decided by c2pa: " in out and "decides the verdict" in out
    assert "signer is not in your trust list" in out and LEAKED_COORDINATES[0] not in out
    anchors = str(provenance_media / "anchors.pem")
    assert main(["detect", file, "--model", str(random_checkpoint), "--no-explain", "--trust-anchors", anchors]) == 0
    assert "the signer is in your trust list" in capsys.readouterr().out
    missing = str(provenance_media / "missing.pem")
    assert main(["detect", file, "--model", str(random_checkpoint), "--trust-anchors", missing]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert "trust-anchors file" in err and "Traceback" not in err



# --- scan --server ------------------------------------------------------------------------------

SERVER_KEYS = {"scan": "cli-scan-key", "other": "cli-other-key"}
# Columns a server's row may differ in from a local scan's of the same file: when and how long.
RUN_COLUMNS = {"analyzed_at", "duration_ms"}


@pytest.fixture(scope="module")
def servers(random_checkpoint, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """An ordinary server, and a tight one: one worker, a queue of one, a token every 2 s and a burst of one."""
    folder = tmp_path_factory.mktemp("scan-servers")
    model, keys = ["--model", str(random_checkpoint)], ",".join(SERVER_KEYS.values())
    started = [
        _start([*model, "--workers", "2", "--rate", "0", "--data-dir", str(folder / "main")], keys, folder / "main.log"),
        _start([*model, "--workers", "1", "--queue-size", "1", "--rate", "0.5", "--burst", "1", "--data-dir",
                str(folder / "tight")], keys, folder / "tight.log"),
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # generous: on a busy machine importing torch alone can take a minute
        for server in started:
            _wait_ready(server, deadline)
        yield SimpleNamespace(main=started[0], tight=started[1])
    finally:
        for server in started:
            _stop(server)


@pytest.fixture(scope="module")
def long_clip(hopper_rgb, tmp_path_factory) -> Path:
    """256 frames: analysing all of them keeps a server's worker busy for many seconds."""
    frames = face_frames(hopper_rgb)
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    path.write_bytes(make_clip([frames[i % len(frames)] for i in range(256)], fps=10))
    return path


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _busy(url: str) -> int:
    return httpx.get(url + "/v1/health").json()["jobs_waiting_or_running"]


def test_a_result_json_gives_the_row_its_object_gives(engine, hopper_path, synthetic_clip):
    """The server's JSON makes the same export row as the result object it came from."""
    photo = ImageDeepfakeDetector(engine=engine).detect(hopper_path, explain=False)
    clip = VideoDeepfakeDetector(engine=engine).detect(synthetic_clip, num_frames=4, explain=False)
    for result in (photo, clip):
        assert history_row_of(json.loads(json.dumps(result.to_dict())), result.source) == result.history_row()


def test_scan_through_a_server_gives_its_results_and_the_local_outputs(servers, scanned, media, tmp_path, capsys):
    """One good photo, a clip, a corrupt JPEG (refused by the server), text named .jpg and a missing
    file (refused here): the same rows, CSV, JSON, heatmap files and exit code as a local scan."""
    url = servers.main.url
    files = [str(media / n) for n in ("hopper.jpg", "broken.jpg", "nested/notes.jpg", "nested/clip.mp4", "gone.jpg")]
    code = main(["scan", *files, "--server", url, "--api-key", SERVER_KEYS["scan"], "--workers", "2",
                 "--num-frames", "8", "--csv", str(tmp_path / "r.csv"), "--json", str(tmp_path / "r.json"),
                 "--heatmaps", str(tmp_path / "heatmaps")])  # fmt: skip
    printed = capsys.readouterr()
    assert code == EXIT_SOME_FAILED
    assert "Scanned 5 files" in printed.out and f"server {url}, 2 workers" in printed.out and "Failed (3):" in printed.out
    assert "5/5" in printed.err  # the progress bar
    payload = json.loads((tmp_path / "r.json").read_text())
    rows = payload["rows"]
    assert [r["file_name"] for r in rows] == files
    assert (tmp_path / "r.csv").read_bytes().decode() == history_csv(rows)
    by_name = {Path(r["file_name"]).name: r for r in rows}
    assert by_name["broken.jpg"]["verdict"] == "ERROR" and "truncated or corrupt" in by_name["broken.jpg"]["error"]
    assert by_name["broken.jpg"]["media_type"] == "image" and by_name["broken.jpg"]["sha256"]
    assert "not an image or a video" in by_name["notes.jpg"]["error"]
    assert "File not found" in by_name["gone.jpg"]["error"]

    local = {Path(r["file_name"]).name: r for r in scanned["json"]["rows"]}
    for name in ("hopper.jpg", "clip.mp4", "broken.jpg"):  # the local scan ran with the same options
        ours = {k: v for k, v in by_name[name].items() if k not in RUN_COLUMNS | {"error"}}
        theirs = {k: v for k, v in local[name].items() if k not in RUN_COLUMNS | {"error"}}
        assert ours == pytest.approx(theirs, abs=1e-5), name
    # The results are the server's own JSON, kept as it sent them.
    results = payload["results"]
    assert [r["source"] for r in results] == ["hopper.jpg", "clip.mp4"]
    for result in results:
        served = httpx.get(f"{url}/v1/results/{result['id']}", headers={"X-API-Key": SERVER_KEYS["scan"]})
        assert served.json() == result
    # Every heatmap the results refer to was fetched, under the names a local scan gives them.
    fetched = sorted(p.name for p in (tmp_path / "heatmaps").iterdir())
    written = sorted(Path(r["heatmap_overlay_path"]).name for r in scanned["json"]["results"]
                     if r["source"].endswith(("hopper.jpg", "clip.mp4")))  # fmt: skip
    written += sorted(Path(f["heatmap_overlay_path"]).name for r in scanned["json"]["results"]
                      if r["media_type"] == "video" for f in r["timeline"] if f["heatmap_overlay_path"])  # fmt: skip
    assert fetched == sorted(set(written)) and len(fetched) == 1 + len(results[1]["suspicious_frames"])
    assert all((tmp_path / "heatmaps" / n).read_bytes().startswith(b"\x89PNG") for n in fetched)


def test_scan_through_a_server_waits_out_its_full_queue_and_rate_limit(servers, long_clip, media, capsys):
    """Another key's long job fills the tight server's queue of one: the scan is answered 429 (its one
    token went on the check of the key) and 503 with Retry-After, waits, and succeeds once the queue frees."""
    server = servers.tight
    other = {"X-API-Key": SERVER_KEYS["other"]}
    long = httpx.post(server.url + "/v1/jobs", headers=other, timeout=60,
                      files={"file": ("long.mp4", long_clip.read_bytes())}, data={"num_frames": "256"})  # fmt: skip
    assert long.status_code == 202, long.text
    outcome: dict = {}
    args = ["scan", str(media / "hopper.jpg"), "--server", server.url, "--api-key", SERVER_KEYS["scan"], "-q"]
    scan = threading.Thread(target=lambda: outcome.update(code=main(args)))
    scan.start()
    _wait_for(lambda: '"POST /v1/jobs HTTP/1.1" 503' in server.log.read_text(), 120, "the scan to find the queue full")
    assert _wait_for(lambda: httpx.delete(f"{server.url}/v1/jobs/{long.json()['id']}", headers=other).status_code
                     == 200, 30, "the long job to be cancelled")  # fmt: skip
    scan.join(180)
    assert outcome["code"] == EXIT_OK, capsys.readouterr()
    assert "Scanned 1 file " in capsys.readouterr().out
    log = server.log.read_text()
    assert '"POST /v1/jobs HTTP/1.1" 429' in log and '"POST /v1/jobs HTTP/1.1" 202' in log


def test_ctrl_c_cancels_the_jobs_the_scan_left_on_the_server(servers, long_clip):
    """SIGINT to ``python -m deepfake scan --server``: exit 130 with one line, and the job is cancelled."""
    url = servers.main.url
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPFAKE_API_KEY": SERVER_KEYS["scan"]}  # the key from the env
    # A shell that starts a job in the background (as CI may start the tests) makes it ignore
    # SIGINT, and children inherit that; a scan run at a terminal has the default, so give it that.
    scan = subprocess.Popen([sys.executable, "-m", "deepfake", "scan", str(long_clip), "--server", url,
                             "--num-frames", "256", "-q"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        _wait_for(lambda: _busy(url) == 1, 120, "the scan's job")
        scan.send_signal(signal.SIGINT)
        _, err = scan.communicate(timeout=60)
    finally:
        scan.kill()
    assert scan.returncode == EXIT_INTERRUPTED and err.strip().splitlines()[-1] == "interrupted", err
    assert "Traceback" not in err
    cancelled = re.findall(r'"DELETE /v1/jobs/(\S+) HTTP/1.1" 200', servers.main.log.read_text())
    assert len(cancelled) == 1
    job = httpx.get(f"{url}/v1/jobs/{cancelled[0]}", headers={"X-API-Key": SERVER_KEYS["scan"]}).json()
    assert job["status"] == "cancelled"
    _wait_for(lambda: _busy(url) == 0, 10, "the server's worker to be freed")


def test_a_server_that_cannot_be_used_ends_the_scan_with_one_line(servers, media, capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{sock.getsockname()[1]}"
    photo = str(media / "hopper.jpg")
    for args, message in (
        (["--server", nobody, "--api-key", "k"], f"Cannot reach the server at {nobody}"),
        (["--server", "host:8000"], "Cannot reach the server at host:8000: Request URL has an unsupported protocol"),
        (["--server", "http://[::1"], "'http://[::1' is not a server's URL"),
        (["--server", servers.main.url, "--api-key", "wrong"], "refused the API key: The API key is not valid."),
        (["--server", servers.main.url, "--engine", "ray"], "--server cannot be combined with --engine ray"),
        (["--server", servers.main.url, "--include-location"], "--server cannot be combined with --include-location"),
    ):
        assert main(["scan", photo, *args, "-q"]) == EXIT_UNUSABLE
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
