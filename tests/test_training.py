"""Training and evaluation end to end on a tiny folder the test makes (no shared data)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import CLIP_FPS, face_frames, make_clip
from streamlit.testing.v1 import AppTest

from deepfake.engine import DetectionEngine
from deepfake.evaluation.compare import Evaluation, compare
from deepfake.evaluation.compare import main as compare_main
from deepfake.evaluation.evaluate import MADE_KINDS, SCORES_FILE, EvalConfig, evaluate, read_scores
from deepfake.interfaces.dashboard import (
    authentic_tables,
    checkpoint_metrics,
    kinds_table,
    ladder_table,
    load_evaluation,
    loko_table,
    metrics_table,
)
from deepfake.loading import load_model, save_checkpoint
from deepfake.model import ModelConfig, create_model
from deepfake.training.data import (
    VIDEO_SOURCE,
    add_reconstructions,
    assign_splits,
    build_cache,
    more_training_crops,
    scan,
)
from deepfake.training.taef2 import DECODER_FILE, ENCODER_FILE, TAEF2
from deepfake.training.train import main as train_main


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


TINY = ["--epoch-size", "8", "--batch-size", "4", "--input-size", "64", "--val-fraction", "0.5",
        "--val-per-kind", "4", "--workers", "0", "--no-bf16"]  # fmt: skip


def test_train_writes_a_loadable_two_head_checkpoint_and_resumes(tiny_data, tmp_path, hopper_rgb):
    out = tmp_path / "model.pth"
    args = ["--data", str(tiny_data), "--out", str(out), "--cache", str(tmp_path / "cache"), *TINY,
            "--version", "test-1"]  # fmt: skip
    train_main([*args, "--total-samples", "8"])
    loaded = load_model(out)
    assert loaded.version == "test-1" and loaded.config.input_size == 64 and loaded.config.face_margin == 1.3
    assert loaded.config.heads == ("blending", "generation") and len(loaded.config.combine_weights) == 2
    assert all(t > 0 for t in loaded.config.head_temperatures) and loaded.threshold == 0.6
    assert {"self_blend", "part_swap", "blurred"} <= set(loaded.trained_on)
    as_given = loaded.metrics["as given"]
    assert {"auc:self_blend", "auc:fake:blurred", "false_alarms", "real_mean"} <= set(as_given)
    by_source = {k: v for k, v in as_given.items() if k.startswith("real_mean:")}
    assert by_source and min(by_source.values()) <= as_given["real_mean"] <= max(by_source.values())
    assert set(loaded.metrics) >= {"JPEG 75", "half size + JPEG 50", "H.264 CRF 35", "selection"}
    assert len(loaded.metrics["history"]) == 1
    assert "AUC, self_blend" in checkpoint_metrics(loaded).index  # the dashboard's sidebar shows them
    assert out.with_suffix(".log").read_text().count("chunk 1:") == 1
    assert out.with_name("model.state.pt").exists()
    assert load_model(out.with_name("model.last.pth")).metrics["history"] == loaded.metrics["history"]
    train_main([*args, "--total-samples", "16"])  # resumes at chunk 2, not from scratch
    log = out.with_suffix(".log").read_text()
    assert "resumed from" in log and "chunk 2:" in log
    assert load_model(out).config.flip_average  # the default for new models

    # The engine scores with both heads: a face carries each head's probability and the kind that dominates.
    engine = DetectionEngine.load(out, device="cpu")
    face = engine.score_faces([hopper_rgb], engine.faces_for([hopper_rgb]), cam_method="gradcam")[0][0]
    assert set(face.head_probabilities) == {"blending", "generation"}
    assert face.dominant_evidence in ("blending", "generation") and face.cam is not None
    assert face.to_dict()["generation_probability"] == round(face.head_probabilities["generation"], 6)

    # Recalibrating only (--init, --total-samples 0): same weights, a new calibration, the ancestry kept.
    again = tmp_path / "again.pth"
    train_main(["--data", str(tiny_data), "--out", str(again), "--cache", str(tmp_path / "cache"), "--init", str(out),
                "--total-samples", "0", *TINY, "--version", "test-2"])  # fmt: skip
    before, after = torch.load(out, weights_only=True), torch.load(again, weights_only=True)
    assert after["version"] == "test-2"
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
    assert after["lineage"] == [before["train_config"]]

    # Several --init checkpoints: their weights are averaged (a soup), each run in the lineage once.
    shifted = {**before, "train_config": {**before["train_config"], "seed": 99},
               "state_dict": {k: v + 1 if v.is_floating_point() else v for k, v in before["state_dict"].items()}}  # fmt: skip
    torch.save(shifted, tmp_path / "shifted.pth")
    soup = tmp_path / "soup.pth"
    train_main(["--data", str(tiny_data), "--out", str(soup), "--cache", str(tmp_path / "cache"), "--init", str(out),
                str(tmp_path / "shifted.pth"), "--total-samples", "0", *TINY])  # fmt: skip
    souped = torch.load(soup, weights_only=True)
    for k, v in before["state_dict"].items():
        assert torch.allclose(souped["state_dict"][k], v + 0.5 if v.is_floating_point() else v, atol=1e-5), k
    assert souped["lineage"] == [before["train_config"], shifted["train_config"]]
    assert souped["train_config"]["init"] == [str(out), str(tmp_path / "shifted.pth")]
    # Only models of one layout average: a one-logit model's head has another shape.
    save_checkpoint(tmp_path / "one.pth", create_model("efficientnet_lite0"), ModelConfig(arch="efficientnet_lite0"))
    with pytest.raises(SystemExit, match="does not have the layout"):
        train_main(["--data", str(tiny_data), "--out", str(tmp_path / "bad.pth"), "--cache", str(tmp_path / "cache"),
                    "--init", str(out), str(tmp_path / "one.pth"), "--total-samples", "0", *TINY])  # fmt: skip


def test_a_run_whose_state_is_lost_goes_on_from_its_checkpoint(tiny_data, tmp_path):
    first = tmp_path / "first.pth"
    args = ["--data", str(tiny_data), "--cache", str(tmp_path / "cache"), *TINY, "--total-samples", "24"]
    train_main([*args, "--out", str(first), "--max-steps", "2"])  # chunk 1 of 3, then the state is lost
    first.with_name("first.state.pt").unlink()
    then = tmp_path / "then.pth"
    train_main([*args, "--out", str(then), "--continue-from", str(first)])
    # Chunk 2 of 3 starts at step 2 of the warm-up-then-cosine schedule (6 steps), not at its start.
    lr = 3e-4 * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * 2 / 6)))
    assert f"at chunk 2 (lr {lr:.2e})" in then.with_suffix(".log").read_text()
    history = load_model(then.with_name("then.last.pth")).metrics["history"]
    assert [h["chunk"] for h in history] == [1, 2, 3] and history[0] == load_model(first).metrics["history"][0]
    with pytest.raises(SystemExit, match="seed=0 \\(here 1\\)"):
        train_main([*args, "--out", str(tmp_path / "other.pth"), "--continue-from", str(first), "--seed", "1"])


def test_an_ensemble_keeps_its_members_whole_and_is_calibrated_not_trained(tiny_data, tmp_path, hopper_rgb, capsys):
    """--ensemble: the --init checkpoints become members of one model (their weights as they were),
    calibrated on validation; the engine loads, scores and explains it like any other checkpoint."""
    config = ModelConfig(arch="efficientnet_lite0", input_size=64, flip_average=True, heads=("blending", "generation"),
                         combine_weights=(1.0, 1.0), head_temperatures=(1.0, 1.0))  # fmt: skip
    members = []
    for seed, arch in ((3, "efficientnet_lite0"), (4, "efficientnet_lite1")):  # of different depths, too
        torch.manual_seed(seed)
        members.append(tmp_path / f"member{seed}.pth")
        save_checkpoint(members[-1], create_model(arch, num_outputs=2), ModelConfig(**{**config.to_dict(), "arch": arch}),
                        extra={"train_config": {"seed": seed}})  # fmt: skip
    out = tmp_path / "ensemble.pth"
    args = ["--data", str(tiny_data), "--cache", str(tmp_path / "cache"), *TINY, "--ensemble"]
    train_main([*args, "--out", str(out), "--init", *map(str, members), "--total-samples", "0", "--version", "ens-1"])
    saved = torch.load(out, weights_only=True)
    assert saved["arch"] == "efficientnet_lite0+efficientnet_lite1" and saved["version"] == "ens-1"
    assert saved["lineage"] == [{"seed": 3}, {"seed": 4}]
    for i, member in enumerate(members):
        for key, value in torch.load(member, weights_only=True)["state_dict"].items():
            assert torch.equal(saved["state_dict"][f"members.{i}.{key}"], value), key
    loaded = load_model(out)
    assert loaded.config.combine == "mixture" and loaded.config.head_temperatures != (1.0, 1.0)
    assert "auc:self_blend" in loaded.metrics["as given"]

    engine = DetectionEngine.load(out, device="cpu")
    crop = engine.crop(hopper_rgb, engine.faces_for([hopper_rgb])[0][0].box).pixels
    scores, cams = engine.score_and_cams([crop])
    assert scores.fake[0] == pytest.approx(engine.score_heads([crop]).fake[0], abs=1e-5)
    assert cams.shape == (1, 64, 64) and cams.max() == pytest.approx(1.0)

    # Capped at a member's validation false alarms: the same calibration, lowered by one shift.
    capped = tmp_path / "capped.pth"
    train_main([*args, "--out", str(capped), "--init", *map(str, members), "--total-samples", "0",
                "--false-alarms-of", str(members[0])])  # fmt: skip
    capped_model = load_model(capped)
    assert torch.load(capped, weights_only=True)["train_config"]["false_alarms_of"] == str(members[0])
    assert capped_model.config.combine_bias <= loaded.config.combine_bias
    assert capped_model.config.combine_offsets == loaded.config.combine_offsets
    assert capped_model.metrics["as given"]["false_alarms"] <= loaded.metrics["as given"]["false_alarms"]

    # Members must prepare crops alike and have the run's heads; an ensemble is not trained.
    save_checkpoint(tmp_path / "wide.pth", create_model("efficientnet_lite0", num_outputs=2),
                    ModelConfig(**{**config.to_dict(), "input_size": 96}))  # fmt: skip
    with pytest.raises(SystemExit, match="input_size"):
        train_main([*args, "--out", str(tmp_path / "bad.pth"), "--init", str(members[0]), str(tmp_path / "wide.pth"),
                    "--total-samples", "0"])  # fmt: skip
    with pytest.raises(SystemExit, match="an ensemble already"):
        train_main([*args, "--out", str(tmp_path / "bad.pth"), "--init", str(members[0]), str(out), "--total-samples", "0"])
    with pytest.raises(SystemExit, match="at least two"):
        train_main([*args, "--out", str(tmp_path / "bad.pth"), "--init", str(members[0]), "--total-samples", "0"])
    with pytest.raises(SystemExit):
        train_main([*args, "--out", str(tmp_path / "bad.pth"), "--init", *map(str, members), "--total-samples", "8"])
    assert "does not train it" in capsys.readouterr().err and not (tmp_path / "bad.pth").exists()


def test_change_maps_mark_the_manipulation_and_train_a_head_the_checkpoint_leaves_out(tiny_data, tmp_path,
                                                                                       monkeypatch):
    """A pair's change map marks where its made fake differs from its real after the shared chain (a
    self-blend: inside the face, not the whole crop; the real: nowhere); a fake folder's picture is
    not made from its real, so its map is UNKNOWN. With --mask-loss the change-map convolution trains
    and resumes from the run's state, and the checkpoint keeps the model's own layout only."""
    from deepfake.training import train as train_module

    cache = build_cache(tiny_data, tmp_path / "cache", val_fraction=0.5)
    config = train_module.TrainConfig(data=str(tiny_data), out=str(tmp_path / "m.pth"), input_size=64,
                                      degradation={k: 0.0 for k in ("tone", "blur", "noise", "resize", "h264",
                                                                    "jpeg_heavy", "jpeg_light")})  # fmt: skip
    kinds = train_module.kinds_available(cache, config, validation=False)
    real, fake = kinds["self_blend"][0], kinds["fake:blurred"][0]
    pairs = [(real, "self_blend", -1), (real, "fake:blurred", fake)]
    dataset = train_module.PairSet(cache, pairs, np.array([real]), config, train=True)
    pixels, _, _, changed = dataset[0]
    assert not changed[0].any()
    assert torch.equal(changed[1], torch.from_numpy(train_module.change_map(*pixels.permute(0, 2, 3, 1).numpy())))
    assert 0.02 < changed[1].float().mean() < 0.9  # a region of the face, not nothing, not everything
    assert not changed[1][:4].any() and not changed[1][:, :4].any()  # the crop's border is never blended
    assert (dataset[1][3][1] == train_module.UNKNOWN).all()
    # A TAEF2 rendering (no JPEG grid) is re-saved at its real's quality (here 30) in the source's grid,
    # and its real alike: a rendering identical to its crop comes out identical, and marks nothing.
    monkeypatch.setattr(train_module, "make_fake", lambda kind, cache, index, *rest: np.asarray(cache.crops[index]))
    cache.qualities[real] = 30
    cache.spans[real] = 40 * train_module.CACHE_MARGIN / config.face_margin  # a 64 -> 40 -> 64 px grid round trip
    pixels, _, _, changed = train_module.PairSet(cache, [(real, "decoder_blend", -1)], np.array([real]), config,
                                                 train=True)[0]  # fmt: skip
    assert torch.equal(pixels[0], pixels[1]) and not changed.any()

    out = tmp_path / "masked.pth"
    args = ["--data", str(tiny_data), "--out", str(out), "--cache", str(tmp_path / "cache"), *TINY, "--mask-loss", "0.5"]
    train_main([*args, "--total-samples", "8"])
    state = torch.load(out.with_name("masked.state.pt"), weights_only=True)
    assert set(state["change_head"]) == {"conv.weight", "conv.bias"}
    saved = torch.load(out, weights_only=True)
    assert saved["train_config"]["mask_loss"] == 0.5
    assert set(saved["state_dict"]) == set(create_model("efficientnet_lite0", num_outputs=2).state_dict())
    train_main([*args, "--total-samples", "16"])
    after = torch.load(out.with_name("masked.state.pt"), weights_only=True)
    assert after["epoch"] == 2 and not torch.equal(after["change_head"]["conv.weight"], state["change_head"]["conv.weight"])


def test_left_out_kinds_are_never_trained_on(tiny_data, tmp_path):
    out = tmp_path / "unseen.pth"
    train_main(["--data", str(tiny_data), "--out", str(out), "--cache", str(tmp_path / "cache"), *TINY,
                "--total-samples", "8", "--max-steps", "1", "--leave-out", "fake:blurred"])  # fmt: skip
    loaded = load_model(out)
    assert "blurred" not in loaded.trained_on and "auc:fake:blurred" not in loaded.metrics["as given"]


def test_a_kind_without_a_share_is_not_listed_as_trained_on(tiny_data, tmp_path):
    """A kind the mixture gives no share is never drawn: the checkpoint must not claim it."""
    out = tmp_path / "no-swaps.pth"
    train_main(["--data", str(tiny_data), "--out", str(out), "--cache", str(tmp_path / "cache"), *TINY,
                "--total-samples", "8", "--max-steps", "1", "--mixture", "part_swap=0"])  # fmt: skip
    trained_on = load_model(out).trained_on
    assert "part_swap" not in trained_on and {"self_blend", "blurred"} <= set(trained_on)


@pytest.fixture(scope="module")
def held_out(tiny_data, tmp_path_factory, hopper_rgb, astronaut_rgb) -> dict:
    """Beside ``tiny_data``: three tiny clips (the cache trains on the first two and holds the third
    out), a cache split in half, a folder of authentic photos and random TAEF2 weights."""
    folder = tmp_path_factory.mktemp("held_out")
    videos = folder / "videos"
    videos.mkdir()
    for i, face in enumerate([hopper_rgb, astronaut_rgb, hopper_rgb[:, ::-1]]):
        (videos / f"clip{i}.mp4").write_bytes(make_clip(face_frames(face, count=8), CLIP_FPS))
    build_cache(tiny_data, folder / "cache", val_fraction=0.5, videos=videos)
    photos = folder / "photos"
    _write(photos / "hopper.jpg", hopper_rgb)
    _write(photos / "astronaut.png", astronaut_rgb)
    (photos / "notes.txt").write_text("not a photo")
    torch.manual_seed(0)
    taef2 = TAEF2()
    for part, name in ((taef2.encoder, ENCODER_FILE), (taef2.decoder, DECODER_FILE)):
        torch.save({k: v.half() for k, v in part.state_dict().items()}, folder / name)
    return {"cache": str(folder / "cache"), "videos": str(videos), "photos": str(photos), "taef2": str(folder)}


def test_more_reconstructions_add_training_crops_and_keep_the_ones_made(held_out, tmp_path):
    # Raising the count on a cache that has renderings adds training crops only: validation pairs and
    # the evaluation's held-out renderings stay those earlier models were measured on.
    folder = tmp_path / "cache"
    shutil.copytree(held_out["cache"], folder)
    first = add_reconstructions(folder, held_out["taef2"], per_source=1)
    assert first.reconstructed is not None and first.reconstructions is not None
    chosen, rows = first.reconstructed.copy(), np.array(first.reconstructions)
    more = add_reconstructions(folder, held_out["taef2"], per_source=3)
    assert more.reconstructed is not None and more.reconstructions is not None
    assert more.reconstructions_done == len(more.reconstructed) > len(chosen)
    assert np.array_equal(more.reconstructed[: len(chosen)], chosen)
    assert np.array_equal(more.reconstructions[: len(chosen)], rows)  # not made again
    added = more.reconstructed[len(chosen) :]
    assert not more.is_val[added].any() and all(more.records[i].label == 0 and more.face_found[i] for i in added)
    assert len(set(more.reconstructed.tolist())) == len(more.reconstructed)
    assert max(Counter(more.records[i].source for i in more.reconstructed).values()) <= 3
    assert more.reconstructions[len(chosen) :].any()  # made, not left as the blank room
    assert more_training_crops(more, 3, seed=0) == []  # every source has its count: nothing more to add


@pytest.fixture(scope="module")
def two_head_checkpoint(tmp_path_factory) -> Path:
    """A random two-head model at 64 px whose checkpoint records that it was trained without ``blurred``.
    BatchNorm statistics measured on noise keep its scores apart (see ``random_model`` in conftest)."""
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", num_outputs=2)
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.reset_running_stats()
        norm.momentum = None
    with torch.no_grad():
        model.train()(torch.rand(8, 3, 64, 64) * 2 - 1)
    path = tmp_path_factory.mktemp("two_heads") / "two_heads.pth"
    config = ModelConfig(arch="efficientnet_lite0", input_size=64, heads=("blending", "generation"),
                         combine_weights=(1.0, 1.0), head_temperatures=(1.0, 1.0))  # fmt: skip
    save_checkpoint(path, model.eval(), config, version="two-heads",
                    extra={"train_config": {"leave_out": ["fake:blurred"]}})  # fmt: skip
    return path


def _check_sections(report: dict, out: Path) -> None:
    """What every protocol-v2 report holds, whatever the model."""
    kinds = report["kinds"]
    assert list(kinds) == ["blurred", "self_blend", "part_swap", "decoder_blend", "taef2"]
    assert kinds["blurred"]["population"] == "files" and kinds["taef2"]["population"] == "made"
    for k in kinds.values():
        assert {"as_given", "matched", "n_real", "n_fake"} <= set(k) and k["n_fake"] >= 1
        assert {"auc", "ece", "recall", "fpr"} <= set(k["matched"])
    rows = report["ladder"]["rows"]
    assert list(rows) == ["as given", "JPEG 75", "JPEG 50", "JPEG 30", "half size", "H.264 CRF 28", "H.264 CRF 35",
                          "H.264 CRF 40", "half size + JPEG 50"]  # fmt: skip
    assert all({"auc_files", "auc_made", "fpr", "real_mean", "real_mean_change", "auc_by_kind"} <= set(r) for r in rows.values())
    assert rows["as given"]["real_mean_change"] == 0 and rows["H.264 CRF 40"]["real_mean"] != rows["as given"]["real_mean"]
    assert report["ladder"]["target"]["steps"] == ["JPEG 30", "H.264 CRF 40"]
    photos, videos = report["authentic"]["photos"], report["authentic"]["videos"]
    assert sorted(f["file"] for f in photos["files"]) == ["astronaut.png", "hopper.jpg"]
    assert photos["n_faces"] >= 2 and 0 <= photos["flagged_faces"] <= photos["n_faces"]
    assert [(c["file"], c["in_training"]) for c in videos["clips"]] == [
        ("clip0.mp4", "training"), ("clip1.mp4", "training"), ("clip2.mp4", "held out")]  # fmt: skip
    assert all(c["frames_with_faces"] >= 1 for c in videos["clips"])
    protocol = report["protocol"]
    assert protocol["per_kind"] == 3 and protocol["made_from"] <= 3 and protocol["matched"] == "JPEG 75"
    assert protocol["counts"]["fake/blurred"] == {"held_out": 4, "used": 3}
    assert protocol["reconstructions"]["missing"] == 0
    for name in ("metrics.json", "EVALUATION_REPORT.md", "THRESHOLD_OPTIMIZATION_REPORT.md", "roc.png", "pr.png",
                 "confusion.png", "histogram.png", "reliability.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text())["kinds"].keys() == kinds.keys()
    text = (out / "EVALUATION_REPORT.md").read_text()
    for heading in ("## Protocol", "## Per kind of fake", "## Degradation ladder", "H.264 CRF 40", "## Authentic media",
                    "## Leave one kind out", "## Misses"):  # fmt: skip
        assert heading in text, heading

    # The dashboard's Model performance tab reads the same folder.
    evaluation = load_evaluation(out)
    assert list(kinds_table(evaluation.metrics).index) == list(kinds)
    assert list(ladder_table(evaluation.metrics).index) == list(rows)
    photo_faces, clips = authentic_tables(evaluation.metrics)
    assert len(photo_faces) == photos["n_faces"] and list(clips["Frames in training"]) == ["training", "training", "held out"]
    assert "Real crops vs made fakes" in metrics_table(evaluation).index


def test_evaluate_one_logit_model(tiny_data, held_out, random_checkpoint, tmp_path, monkeypatch):
    report = evaluate(EvalConfig(data=str(tiny_data), out=str(tmp_path), model=str(random_checkpoint), per_kind=3,
                                 **held_out))  # fmt: skip
    _check_sections(report, tmp_path)
    assert report["model"]["heads"] == ["fake"] and all("heads" not in k for k in report["kinds"].values())
    assert "p_fake" in report["authentic"]["photos"]["faces"][0] and "p_blending" not in report["authentic"]["photos"]["faces"][0]
    # As today: held-out files through the engine, with what could not be scored listed.
    assert report["image_level"]["n"] == report["files"]["scored"] == sum(c["used"] for c in report["protocol"]["counts"].values())
    assert report["protocol"]["counts"]["real/people"] == {"held_out": 4, "used": 3}  # capped
    assert report["loko"] == {"given": False, "condition": "JPEG 75", "models": {}}
    assert "None were given" in (tmp_path / "EVALUATION_REPORT.md").read_text()
    assert loko_table(load_evaluation(tmp_path).metrics).empty
    text = (tmp_path / "THRESHOLD_OPTIMIZATION_REPORT.md").read_text()
    assert "Youden" in text and "Recommendation" in text and "0.60" in text

    # The dashboard's Model performance tab shows the new tables.
    monkeypatch.setenv("DEEPFAKE_MODEL", str(random_checkpoint))
    monkeypatch.setenv("DEEPFAKE_REPORTS", str(tmp_path))
    app = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    app.run()
    assert not app.exception, app.exception
    columns = [set(df.value.columns) for df in app.dataframe]
    for column in ("AUC compression matched", "Reals' mean P(fake)", "Fake probability", "Frames in training"):
        assert any(column in c for c in columns), column
    assert any("No model trained without a kind" in i.value for i in app.info)


def test_evaluate_two_head_model_and_left_out_kinds(tiny_data, held_out, two_head_checkpoint, random_checkpoint,
                                                    tmp_path):  # fmt: skip
    config = EvalConfig(data=str(tiny_data), out=str(tmp_path), model=str(two_head_checkpoint), per_kind=3,
                        loko_models={"fake:blurred": str(two_head_checkpoint), "taef2": str(random_checkpoint)},
                        **held_out)  # fmt: skip
    report = evaluate(config)
    _check_sections(report, tmp_path)
    for k in report["kinds"].values():
        assert set(k["heads"]) == {"blending", "generation"} and set(k["heads"]["blending"]) == {"as_given", "matched"}
    assert {"p_blending", "p_generation"} <= set(report["authentic"]["photos"]["faces"][0])
    loko = report["loko"]
    assert loko["given"] and list(loko["models"]) == ["blurred", "taef2"]
    blurred, taef2 = loko["models"]["blurred"], loko["models"]["taef2"]
    assert blurred["left_out_in_training"] is True and taef2["left_out_in_training"] is None  # not recorded
    assert blurred["main_model_auc_matched"] == report["kinds"]["blurred"]["matched"]["auc"]
    assert taef2["n_fake"] == report["kinds"]["taef2"]["n_fake"] and 0 <= taef2["auc_matched"] <= 1
    assert "blending head AUC (matched)" in kinds_table(report).columns
    assert list(loko_table(report).index) == ["blurred", "taef2"]
    # Each AUC matched comes with the spread one draw of held-out items leaves, in the report and the dashboard.
    for k in [*report["kinds"].values(), *({"matched": {"auc": m["auc_matched"], "auc_interval": m["auc_matched_interval"]}}
                                          for m in loko["models"].values())]:  # fmt: skip
        low, high = k["matched"]["auc_interval"]
        assert low <= k["matched"]["auc"] <= high
    assert kinds_table(report)["AUC matched, 95% interval"].str.fullmatch(r"\d\.\d{3}-\d\.\d{3}").all()
    assert loko_table(report)["95% interval"].str.fullmatch(r"\d\.\d{3}-\d\.\d{3}").all()
    assert "| 95% interval |" in (tmp_path / "EVALUATION_REPORT.md").read_text()
    with pytest.raises(SystemExit, match="not in the held-out set"):
        evaluate(EvalConfig(**{**config.__dict__, "loko_models": {"sd21": str(random_checkpoint)}}))

    # A recalibrated model keeps these rows as measured: not scored again, said so, its own column fresh.
    again = evaluate(EvalConfig(**{**config.__dict__, "out": str(tmp_path / "again"), "loko_models": {},
                                   "model": str(random_checkpoint), "loko_from": str(tmp_path / "metrics.json")}))  # fmt: skip
    kept = again["loko"]
    assert kept["carried_from"]["model_version"] == report["model"]["version"]
    assert kept["models"]["taef2"]["auc_matched"] == taef2["auc_matched"]
    assert kept["models"]["taef2"]["main_model_auc_matched"] == again["kinds"]["taef2"]["matched"]["auc"]
    assert "were not scored again" in (tmp_path / "again" / "EVALUATION_REPORT.md").read_text()
    with pytest.raises(SystemExit, match="no leave-one-kind-out results"):
        evaluate(EvalConfig(**{**config.__dict__, "loko_models": {}, "loko_from": str(tmp_path / "missing.json")}))

    # Every scored item is kept, so two models on the same items compare pair by pair.
    units, scores = read_scores(tmp_path / SCORES_FILE)
    assert len(units) == report["image_level"]["n"] + sum(1 + len(MADE_KINDS) for _ in range(report["protocol"]["made_from"]))
    assert list(scores) == list(report["ladder"]["rows"])
    same = compare(Evaluation.read(tmp_path), Evaluation.read(tmp_path), resamples=200)
    assert all(k["difference"] == 0 and k["interval"] == (0, 0) and k["share_better"] == 0 for k in same["kinds"].values())
    result = compare(Evaluation.read(tmp_path), Evaluation.read(tmp_path / "again"), resamples=200)
    assert list(result["kinds"]) == list(report["kinds"]) and result["new"]["version"] == again["model"]["version"]
    for kind, k in result["kinds"].items():
        assert k["base"] == pytest.approx(report["kinds"][kind]["matched"]["auc"], abs=1e-6)
        assert k["new"] == pytest.approx(again["kinds"][kind]["matched"]["auc"], abs=1e-6)
        assert k["interval"][0] <= k["interval"][1] and 0 <= k["share_better"] <= 1
    assert result["mean_of"] == [k for k in report["kinds"] if report["kinds"][k]["matched"]["auc"] < 0.98]
    files = result["files"]["as given"]
    assert files["false_alarms"] == {"base": report["misses"]["n_false_alarms"], "new": again["misses"]["n_false_alarms"]}
    assert files["caught"]["base"] == pytest.approx(report["image_level"]["recall"])
    assert files["caught"]["new"] == pytest.approx(again["image_level"]["recall"])
    assert same["files"]["as given"]["caught"]["new_at_base_false_alarms"] >= same["files"]["as given"]["caught"]["base"]
    compare_main([str(tmp_path), str(tmp_path / "again"), "--resamples", "50", "--kinds", "taef2"])
    text = (tmp_path / "again" / "COMPARISON.md").read_text()
    assert "| **mean of taef2** |" in text and "| H.264 CRF 40 |" in text
    lines = (tmp_path / SCORES_FILE).read_text().splitlines()
    (tmp_path / "fewer").mkdir()
    (tmp_path / "fewer" / SCORES_FILE).write_text("\n".join(lines[:-1]))
    (tmp_path / "fewer" / "metrics.json").write_text((tmp_path / "metrics.json").read_text())
    with pytest.raises(SystemExit, match="scored different items"):
        compare(Evaluation.read(tmp_path), Evaluation.read(tmp_path / "fewer"))
    with pytest.raises(SystemExit, match="no scores.csv"):
        Evaluation.read(tmp_path / "missing")


def test_a_pair_shares_framing_look_and_degradation(tiny_data, tmp_path, monkeypatch):
    """With a 'manipulation' that changes nothing, both members of every training pair come out
    byte-identical: framing jitter, mirroring, bands, tone, blur, noise, resizing, H.264 and JPEG
    were all drawn once for the pair."""
    from deepfake.training import train as train_module
    from deepfake.training.data import build_cache

    cache = build_cache(tiny_data, tmp_path / "cache", val_fraction=0.5)
    config = train_module.TrainConfig(data=str(tiny_data), out=str(tmp_path / "m.pth"), input_size=64)
    kinds = train_module.kinds_available(cache, config, validation=False)
    pairs = train_module.draw_pairs(cache, {"self_blend": kinds["self_blend"]}, 40, np.random.default_rng(0),
                                    train_module.MIXTURE)  # fmt: skip
    monkeypatch.setattr(train_module, "make_fake", lambda kind, cache, index, *rest: np.asarray(cache.crops[index]))
    dataset = train_module.PairSet(cache, pairs, np.array(kinds["self_blend"]), config, train=True)
    heavy = 0
    for i in range(len(pairs)):
        pixels, targets, weights, changed = dataset[i]
        assert torch.equal(pixels[0], pixels[1]), f"pair {i} was degraded differently"
        assert targets[0].tolist() == [0.0, 0.0] and targets[1].tolist() == [1.0, 0.0]
        assert not changed.any()  # nothing was manipulated, so nothing is marked as changed
        heavy += weights[1].item() < 1
    assert 0 < heavy < len(pairs)  # some pairs are heavily degraded, and their fake weighs less


def test_the_mixture_and_the_degradation_are_the_run_s_to_set(tiny_data, tmp_path, capsys):
    """--mixture replaces the named kinds' shares, --degradation the chain's probabilities; both reach
    the pairs drawn and the chain applied, and bad names or values end the run with a message."""
    from deepfake.training import train as train_module
    from deepfake.training.data import build_cache

    config = train_module.parse_args(["--data", str(tiny_data), "--out", str(tmp_path / "m.pth"), "--input-size", "64",
                                      "--mixture", "self_blend=0", "part_swap=1",
                                      "--degradation", "tone=0", "blur=0", "noise=0", "resize=0", "h264=0",
                                      "jpeg_heavy=0", "jpeg_light=0"])  # fmt: skip
    assert config.mixture == {**train_module.MIXTURE, "self_blend": 0.0, "part_swap": 1.0}
    cache = build_cache(tiny_data, tmp_path / "cache", val_fraction=0.5)
    kinds = train_module.kinds_available(cache, config, validation=False)
    kinds = {k: kinds[k] for k in ("self_blend", "part_swap")}
    pairs = train_module.draw_pairs(cache, kinds, 30, np.random.default_rng(0), config.mixture)
    assert {kind for _, kind, _ in pairs} == {"part_swap"}
    quiet = train_module.PairSet(cache, pairs, np.array(kinds["self_blend"]), config, train=True)
    assert all(quiet[i][2][1].item() == 1.0 for i in range(len(pairs)))  # no step drawn, so never heavy
    default = train_module.TrainConfig(data=str(tiny_data), out=str(tmp_path / "m.pth"), input_size=64)
    usual = train_module.PairSet(cache, pairs, np.array(kinds["self_blend"]), default, train=True)
    assert any(usual[i][2][1].item() < 1.0 for i in range(len(pairs)))
    for bad, message in ((["--mixture", "nose_swap=0.2"], "unknown name 'nose_swap'"),
                         (["--mixture", "self_blend=-1"], "must not be negative"),
                         (["--degradation", "h264=2"], "h264 is a probability"),
                         (["--degradation", "h264_crf=30"], "unknown name 'h264_crf'")):  # fmt: skip
        with pytest.raises(SystemExit):
            train_module.parse_args(["--data", str(tiny_data), *bad])
        assert message in capsys.readouterr().err


def test_decoder_trace_pairs_can_take_a_chain_of_their_own(tiny_data, tmp_path, monkeypatch, capsys):
    """--trace-degradation sets the chain of the TAEF2 kinds' pairs over --degradation: with every
    step off there, no TAEF2 pair is degraded heavily while blends still are, and the two members of
    a pair still come out alike."""
    from deepfake.training import train as train_module
    from deepfake.training.data import build_cache

    off = ["tone=0", "blur=0", "noise=0", "resize=0", "h264=0", "jpeg_heavy=0", "jpeg_light=0"]
    config = train_module.parse_args(["--data", str(tiny_data), "--out", str(tmp_path / "m.pth"), "--input-size", "64",
                                      "--trace-degradation", *off])  # fmt: skip
    assert config.degradation == {} and config.trace_degradation == {name.split("=")[0]: 0.0 for name in off}
    cache = build_cache(tiny_data, tmp_path / "cache", val_fraction=0.5)
    reals = train_module.kinds_available(cache, config, validation=False)["self_blend"]
    pairs = train_module.draw_pairs(cache, {"self_blend": reals, "taef2": reals}, 60, np.random.default_rng(0),
                                    {"self_blend": 0.5, "taef2": 0.5})  # fmt: skip
    monkeypatch.setattr(train_module, "make_fake", lambda kind, cache, index, *rest: np.asarray(cache.crops[index]))
    dataset = train_module.PairSet(cache, pairs, np.array(reals), config, train=True)
    heavy = {"self_blend": 0, "taef2": 0}
    for i, (_, kind, _) in enumerate(pairs):
        pixels, _, weights, _ = dataset[i]
        assert torch.equal(pixels[0], pixels[1]), f"pair {i} ({kind}) was degraded differently"
        heavy[kind] += weights[1].item() < 1
    assert heavy["taef2"] == 0 and heavy["self_blend"] > 0
    with pytest.raises(SystemExit):
        train_module.parse_args(["--data", str(tiny_data), "--trace-degradation", "jpeg_heavy=0.7", "jpeg_light=0.7"])
    assert "jpeg_heavy + jpeg_light must not exceed 1" in capsys.readouterr().err


def test_a_pair_shares_one_level_of_detail_and_compression(tiny_data, tmp_path, monkeypatch):
    """A fake-folder pair whose real was blown up from few source pixels: the sharper fake is
    resampled down to the real's detail, so that sharpness cannot tell the classes apart; a real
    saved at JPEG 60 and a fake that was never a JPEG: the fake is re-saved at 60 in its source's
    grid. A pair of equal detail and quality is left alone."""
    from deepfake.faces import limit_detail
    from deepfake.training import train as train_module
    from deepfake.training.augment import frame_crop
    from deepfake.training.data import build_cache
    from deepfake.training.degradation import Degradation, jpeg_in_grid

    cache = build_cache(tiny_data, tmp_path / "cache", val_fraction=0.5)
    assert cache.spans is not None and (cache.spans[cache.face_found] > 0).all()
    assert cache.qualities is not None and set(cache.qualities[cache.face_found].tolist()) == {95}  # cv2's default
    config = train_module.TrainConfig(data=str(tiny_data), out=str(tmp_path / "m.pth"), input_size=64)
    kinds = train_module.kinds_available(cache, config, validation=False)
    real, fake = kinds["self_blend"][0], kinds["fake:blurred"][0]
    monkeypatch.setattr(train_module, "sample_degradation", lambda rng, config: Degradation())
    monkeypatch.setattr(train_module, "paired_look", lambda image, rng: image)
    dataset = train_module.PairSet(cache, [(real, "fake:blurred", fake)], np.array([real]), config, train=True)
    # The real's crop spans 32 source pixels at the model's framing: half the input's detail.
    cache.spans[:] = 2 * config.input_size
    cache.spans[real] = 32 * train_module.CACHE_MARGIN / config.face_margin
    assert dataset.detail(real) == pytest.approx(0.5) and dataset.detail(fake) == 1.0

    def framed(index: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.default_rng((config.seed, 0, 0)).integers(2**62))
        return frame_crop(np.asarray(cache.crops[index]), config.face_margin, config.input_size, rng)

    pixels = dataset[0][0].permute(0, 2, 3, 1).numpy()
    assert np.array_equal(pixels[0], framed(real))
    assert np.array_equal(pixels[1], limit_detail(framed(fake), 32))
    assert not np.array_equal(pixels[1], framed(fake))
    cache.spans[real] = cache.spans[fake]
    assert np.array_equal(dataset[0][0].permute(0, 2, 3, 1).numpy()[1], framed(fake))

    cache.qualities[:] = 95
    cache.qualities[real], cache.qualities[fake] = 60, 0  # 0: not a JPEG
    pixels = dataset[0][0].permute(0, 2, 3, 1).numpy()
    assert np.array_equal(pixels[0], framed(real))
    assert dataset.source_pixels(fake) == 2 * config.input_size * config.face_margin / train_module.CACHE_MARGIN
    assert np.array_equal(pixels[1], jpeg_in_grid(framed(fake), 60, dataset.source_pixels(fake)))
    assert not np.array_equal(pixels[1], framed(fake))
    cache.qualities[fake] = 60
    assert np.array_equal(dataset[0][0].permute(0, 2, 3, 1).numpy()[1], framed(fake))


def test_the_mixture_combiner_lets_one_head_decide_where_the_linear_one_caps_it():
    """Fakes are blends (the blending head separates them weakly) or generated faces (the generation
    head separates them well, and the blending head reads them as *un*blended, as v2.0.0's did).
    A linear fit must trade one kind against the other; the mixture fit does not, so its generated
    faces reach a confident score and its calibration error is lower."""
    from deepfake.evaluation.metrics import expected_calibration_error
    from deepfake.training.train import fake_scores, fit_combiner

    rng = np.random.default_rng(0)
    n = 4000
    real = np.stack([rng.normal(0, 1, n), rng.normal(-2, 1, n)], 1)
    blend = np.stack([rng.normal(0.8, 1, n), rng.normal(-2, 1, n)], 1)
    generated = np.stack([rng.normal(-3, 1, n), rng.normal(4, 1, n)], 1)
    logits = np.concatenate([real, real, blend, generated])  # reals twice: a 1-in-2 base rate
    labels = np.repeat([0.0, 0.0, 1.0, 1.0], n)
    scores = {}
    for form in ("linear", "mixture"):
        fields = fit_combiner(logits, labels, fake_prior=0.5, form=form)
        assert fields["combine"] == form
        scores[form] = fake_scores(logits, ModelConfig(arch="efficientnet_lite0", heads=("blending", "generation"),
                                                       head_temperatures=(1.0, 1.0), **fields))  # fmt: skip
    eces = {form: expected_calibration_error(labels.astype(int), s) for form, s in scores.items()}
    assert np.median(scores["mixture"][3 * n :]) > 0.95 > np.median(scores["linear"][3 * n :])
    assert eces["mixture"] < eces["linear"] - 0.02, eces


def test_a_knee_lets_faces_far_past_the_reals_tail_reach_a_confident_score():
    """Reals whose generation logit has a long tail (news frames that read as generated) and fakes
    half of which overlap it hold the mixture's generation weight down, so generated faces far
    beyond every real stop short of a confident score (as GAN faces did at 0.8-0.9 in v2.13.0). A
    knee past the reals' 99th percentile gives those a slope of their own: lower calibration error,
    no more false alarms, the same ranking."""
    from deepfake.evaluation.metrics import expected_calibration_error, roc_auc
    from deepfake.training.train import fake_scores, fit_combiner

    rng = np.random.default_rng(0)
    n = 4000
    real = np.stack([rng.normal(-2, 1, n), np.where(rng.random(n) < 0.15, rng.normal(1, 2, n), rng.normal(-4, 1.5, n))], 1)
    blend = np.stack([rng.normal(0, 1.5, n), rng.normal(-3, 1.5, n)], 1)
    generated = np.stack([rng.normal(-4, 1, n), np.where(rng.random(n) < 0.5, rng.normal(1, 3, n), rng.normal(8, 1.5, n))], 1)
    logits = np.concatenate([real, blend, generated])
    labels = np.repeat([0.0, 1.0, 1.0], n)
    far = 2 * n + np.flatnonzero(generated[:, 1] > 6)
    results = {}
    for knee in (0.0, 0.99):
        fields = fit_combiner(logits, labels, fake_prior=0.25, form="mixture", knee=knee)
        assert (len(fields["combine_knots"]) == len(fields["combine_slopes"]) == 2) == (knee > 0)
        scores = fake_scores(logits, ModelConfig(arch="efficientnet_lite0", heads=("blending", "generation"),
                                                 head_temperatures=(1.0, 1.0), **fields))  # fmt: skip
        results[knee] = {"ece": expected_calibration_error(labels.astype(int), scores, prior=0.25),
                         "alarms": float((scores[:n] >= 0.6).mean()), "auc": roc_auc(labels.astype(int), scores),
                         "far": float(np.median(scores[far]))}  # fmt: skip
    assert fields["combine_knots"][1] == pytest.approx(np.quantile(real[:, 1], 0.99), abs=1e-3)
    assert results[0.0]["far"] < 0.95 < results[0.99]["far"], results
    assert results[0.99]["ece"] < 0.85 * results[0.0]["ece"], results
    assert results[0.99]["alarms"] <= results[0.0]["alarms"] and results[0.99]["auc"] >= results[0.0]["auc"] - 0.002, results


def test_the_mixture_calls_no_more_reals_fake_than_the_linear_fit():
    """Reals whose blending logit is heavy-tailed: the best-fitting mixture lets those tails through
    the threshold; the fitted one is shifted down until its false alarms are the linear fit's."""
    from deepfake.evaluation.metrics import roc_auc
    from deepfake.training.train import fake_scores, fit_combiner

    rng = np.random.default_rng(1)
    n = 4000
    real = np.stack([rng.standard_t(2, n) * 0.8, rng.normal(-2, 1, n)], 1)
    blend = np.stack([rng.normal(1.5, 1, n), rng.normal(-2, 1, n)], 1)
    generated = np.stack([rng.normal(-3, 1, n), rng.normal(4, 1, n)], 1)
    logits = np.concatenate([real, blend, generated])
    labels = np.repeat([0.0, 1.0, 1.0], n)
    alarms, aucs = {}, {}
    for form in ("linear", "mixture"):
        fields = fit_combiner(logits, labels, fake_prior=0.25, form=form, threshold=0.6)
        scores = fake_scores(logits, ModelConfig(arch="efficientnet_lite0", heads=("blending", "generation"),
                                                 head_temperatures=(1.0, 1.0), **fields))  # fmt: skip
        alarms[form] = float((scores[:n] >= 0.6).mean())
        aucs[form] = roc_auc(labels[: 2 * n].astype(int), scores[: 2 * n])  # reals against blends
    assert 0 < alarms["mixture"] <= alarms["linear"], alarms
    assert aucs["mixture"] >= aucs["linear"] - 0.005, aucs


def test_a_reference_s_false_alarms_cap_the_model_s_by_one_uniform_shift():
    """--false-alarms-of: the least lowering of the FAKE logit after which neither validation stills
    nor news-clip frames have more at 0.6 than the cap; rankings stay as they were."""
    from deepfake.training.train import Validation, alarm_groups, fake_scores, lower_to_caps

    rng = np.random.default_rng(2)
    n = 200
    kinds = np.array(["real"] * n + ["repeat"] * 10 + ["self_blend"] * n)
    sources = np.array(["lfw"] * 150 + [VIDEO_SOURCE] * 50 + ["lfw"] * 10 + [""] * n)
    logits = np.concatenate([rng.normal([-1, -2], 1, (150, 2)), rng.normal([-1, 0], 1, (50, 2)),  # frames read higher
                             rng.normal(3, 1, (10, 2)), rng.normal([1.5, -1], 1, (n, 2))])  # fmt: skip
    val = Validation(kinds, {"as given": logits}, sources)
    config = ModelConfig(arch="efficientnet_lite0", heads=("blending", "generation"), combine_weights=(1.0, 1.0),
                         head_temperatures=(1.0, 1.0), combine_bias=0.5)  # fmt: skip

    def flagged(c: ModelConfig) -> dict[str, int]:
        return {g: int((fake_scores(logits[m], c) >= 0.6).sum()) for g, m in alarm_groups(val).items()}

    before = flagged(config)
    assert before["stills"] > 3 and before["frames"] > 2, before
    lowered, shift = lower_to_caps(val, config, {"stills": 3, "frames": 2})
    after = flagged(lowered)
    assert after["stills"] <= 3 and after["frames"] <= 2 and (after["stills"] == 3 or after["frames"] == 2), after
    assert shift > 0 and lowered.combine_bias == pytest.approx(0.5 - shift, abs=1e-5)
    assert (np.argsort(fake_scores(logits, lowered)) == np.argsort(fake_scores(logits, config))).all()
    same, none = lower_to_caps(val, config, before)  # already within its caps: unchanged
    assert none == 0 and same == config
