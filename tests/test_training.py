"""Training and evaluation end to end on a tiny folder the test makes (no shared data)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deepfake.data import assign_splits, scan
from deepfake.evaluate import evaluate
from deepfake.loading import load_model
from deepfake.train import main as train_main


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, hopper_rgb, astronaut_rgb) -> Path:
    """real/people/<person>/*.jpg (flips and rescales), fake/blurred/*.jpg, plus a file with no
    face, an unreadable one, and a photo with two faces."""
    root = tmp_path_factory.mktemp("faces")
    for person, image in {"hopper": hopper_rgb, "astronaut": astronaut_rgb}.items():
        for k, (flip, scale) in enumerate([(False, 1.0), (True, 1.0), (False, 0.8), (True, 0.7)]):
            variant = cv2.resize(image[:, ::-1] if flip else image, None, fx=scale, fy=scale)
            _write(root / "real" / "people" / person / f"{k}.jpg", variant)
            _write(root / "fake" / "blurred" / f"{person}_{k}.jpg", cv2.GaussianBlur(variant, (7, 7), 0))
    gradient = np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (150, 1, 3))
    _write(root / "real" / "misc" / "no_face.jpg", gradient)
    pair = np.hstack([cv2.resize(hopper_rgb, (256, 300)), cv2.resize(astronaut_rgb, (300, 300))])
    _write(root / "real" / "misc" / "two_faces.jpg", pair)
    (root / "fake" / "blurred" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_scan_layout_and_identity_split(tiny_data):
    records = scan(tiny_data)
    assert {(r.label, r.source) for r in records} == {(0, "people"), (0, "misc"), (1, "blurred")}
    hopper = [r for r in records if "hopper" in r.identity and r.label == 0]
    assert len({r.identity for r in hopper}) == 1  # the person folder is the identity
    is_val = assign_splits(records, [str(i) for i in range(len(records))], 0.5, seed=0)
    for identity in {r.identity for r in records}:
        sides = {bool(v) for r, v in zip(records, is_val) if r.identity == identity}
        assert len(sides) == 1, f"{identity} straddles train and validation"


def test_near_duplicates_stay_together():
    records = scan_like = [type("R", (), {"identity": f"file{i}"})() for i in range(200)]
    hashes = ["same"] * 100 + [f"h{i}" for i in range(100)]
    is_val = assign_splits(scan_like, hashes, 0.5, seed=1)
    assert len(set(is_val[:100])) == 1 and len(records) == 200


def test_train_writes_a_loadable_calibrated_checkpoint_and_resumes(tiny_data, tmp_path):
    out = tmp_path / "model.pth"
    args = ["--data", str(tiny_data), "--out", str(out), "--cache", str(tmp_path / "cache"), "--epochs", "1",
            "--epoch-size", "8", "--batch-size", "4", "--input-size", "64", "--val-fraction", "0.5",
            "--val-per-kind", "8", "--workers", "0", "--version", "test-1"]  # fmt: skip
    train_main(args)
    loaded = load_model(out)
    assert loaded.version == "test-1" and loaded.config.input_size == 64 and loaded.config.face_margin == 1.3
    assert loaded.threshold == 0.6 and loaded.temperature > 0
    assert "pseudo-fakes (self-blend, part swap, resynthesis)" in loaded.trained_on and "blurred" in loaded.trained_on
    assert "auc_real_vs_pseudo" in loaded.metrics and len(loaded.metrics["history"]) == 1
    assert out.with_suffix(".log").read_text().count("epoch 1:") == 1
    state = out.with_name("model.state.pt")
    assert state.exists()
    train_main(args[:-6] + ["--epochs", "2"] + args[-4:])  # resumes at epoch 2, not from scratch
    log = out.with_suffix(".log").read_text()
    assert "resumed from" in log and "epoch 2:" in log
    assert len(load_model(out).metrics["history"]) == 2
    assert load_model(out).config.flip_average  # the default for new models

    # Recalibrating only (--init, --epochs 0): same weights, a new temperature for plain scoring,
    # and the model's ancestry kept.
    plain = tmp_path / "plain.pth"
    train_main(["--data", str(tiny_data), "--out", str(plain), "--cache", str(tmp_path / "cache"), "--init", str(out),
                "--epochs", "0", "--input-size", "64", "--val-fraction", "0.5", "--workers", "0", "--no-flip-average",
                "--version", "test-2"])  # fmt: skip
    before, after = torch.load(out, weights_only=True), torch.load(plain, weights_only=True)
    assert after["config"]["flip_average"] is False and after["version"] == "test-2"
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
    assert after["metrics"]["history"] == before["metrics"]["history"]
    assert after["lineage"] == [before["train_config"]]


def test_unseen_kind_protocol_holds_out_the_fake_folders(tiny_data, tmp_path):
    out = tmp_path / "unseen.pth"
    train_main(["--data", str(tiny_data), "--out", str(out), "--cache", str(tmp_path / "cache"), "--epochs", "1",
                "--max-steps", "1", "--batch-size", "4", "--input-size", "64", "--val-fraction", "0.5",
                "--workers", "0", "--no-fake-sources"])  # fmt: skip
    loaded = load_model(out)
    assert "blurred" not in loaded.trained_on
    assert "training on ['real', 'pseudo']" in out.with_suffix(".log").read_text()


def test_evaluate_writes_every_report(tiny_data, random_checkpoint, tmp_path):
    report = evaluate(str(tiny_data), str(random_checkpoint), str(tmp_path), pseudo_fakes=True)
    for name in ("metrics.json", "EVALUATION_REPORT.md", "THRESHOLD_OPTIMIZATION_REPORT.md", "roc.png", "pr.png",
                 "confusion.png", "histogram.png", "reliability.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["image_level"]["n"] == 18  # 8 real people + 2 misc + 8 blurred; the broken file is listed
    assert [u["path"].endswith("broken.jpg") for u in saved["files"]["unreadable"]] == [True]
    assert any(p.endswith("no_face.jpg") for p in saved["files"]["no_face"])
    assert saved["files"]["several_faces"] >= 1
    assert set(saved["by_source"]) >= {"people", "misc", "blurred", "pseudo:people"}
    assert 0 <= saved["pseudo_fake_level"]["auc"] <= 1
    assert {row["threshold"] for row in saved["threshold_sweep"]["rows"]} >= {0.5, 0.6}
    text = (tmp_path / "THRESHOLD_OPTIMIZATION_REPORT.md").read_text()
    assert "Youden" in text and "Recommendation" in text and "0.60" in text
    assert report["protocol"]["pseudo_fakes"] is True


def test_evaluate_robustness_rescores_degraded_files(tiny_data, random_checkpoint, tmp_path):
    report = evaluate(str(tiny_data), str(random_checkpoint), str(tmp_path), robustness=True)
    conditions = report["robustness"]
    assert list(conditions) == ["as given", "JPEG quality 75", "JPEG quality 50", "half size",
                                "half size, then JPEG quality 50"]  # fmt: skip
    assert all(c["n"] == 18 for c in conditions.values())  # every readable file, each class
    assert conditions["as given"] == report["image_level"]
    assert all(conditions[name]["ece"] != conditions["as given"]["ece"] for name in list(conditions)[1:])  # rescored
    assert "## Robustness" in (tmp_path / "EVALUATION_REPORT.md").read_text()
