"""``scan --engine ray`` on a local Ray cluster started here (2 CPUs): the same rows as a local scan."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from deepfake.interfaces.cli import EXIT_SOME_FAILED, main
from deepfake.interfaces.scanning import ScanOptions, scan_local

# Ray Data touches its own deprecated settings when it copies its context; nothing to do with us.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster() -> str:
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                       object_store_memory=200 * 2**20)  # fmt: skip
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def files(tmp_path_factory, hopper_jpeg_bytes, synthetic_clip) -> list[str]:
    root = tmp_path_factory.mktemp("collection")
    paths = {"hopper.jpg": hopper_jpeg_bytes, "clip.mp4": synthetic_clip, "cut.jpg": hopper_jpeg_bytes[:3000],
             "copy.jpg": hopper_jpeg_bytes}  # fmt: skip
    for name, data in paths.items():
        (root / name).write_bytes(data)
    return [str(root / name) for name in paths]


@pytest.fixture(scope="module")
def local_rows(engine, files) -> list[dict]:
    return [o.row for o in scan_local(files, engine, ScanOptions(num_frames=6), workers=1)]


def _same(rows: list[dict], expected: list[dict]) -> None:
    assert [r["file_name"] for r in rows] == [r["file_name"] for r in expected]  # input order kept
    for row, want in zip(rows, expected):
        assert (row["verdict"], row["media_type"], row["error"]) == (want["verdict"], want["media_type"], want["error"])
        if want["verdict"] != "ERROR":
            assert float(row["fake_probability"]) == pytest.approx(float(want["fake_probability"]), abs=1e-4)
            assert int(row["frames"]) == int(want["frames"]) and row["model_version"] == "test"


def test_scan_on_ray_matches_local(cluster, files, local_rows, random_checkpoint, tmp_path, capsys):
    out = tmp_path / "ray.json"
    code = main(["scan", *files, "--engine", "ray", "--workers", "2", "--num-frames", "6", "--json", str(out),
                 "--model", str(random_checkpoint), "-q"])  # fmt: skip
    assert code == EXIT_SOME_FAILED  # cut.jpg
    _same(json.loads(out.read_text())["rows"], local_rows)
    assert "ray, 2 workers" in capsys.readouterr().out
    assert ray.is_initialized()  # a Ray it did not start is left running


def test_cli_joins_a_cluster_by_address(cluster, files, local_rows, random_checkpoint, tmp_path):
    """The real CLI in another process, pointed at the test's cluster; rows stream into the CSV."""
    out = tmp_path / "ray.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "deepfake", "scan", *files, "--engine", "ray", "--address", cluster,
                           "--num-frames", "6", "--csv", str(out), "--model", str(random_checkpoint), "-q"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode == EXIT_SOME_FAILED, done.stderr[-3000:]
    assert "ray, 2 workers" in done.stdout  # the cluster's CPUs, as no --workers was given
    _same(list(csv.DictReader(out.read_text().splitlines())), local_rows)
