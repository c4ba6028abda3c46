"""Detector v2's two heads (blending, generation) through loading, scoring, explaining and results;
a one-logit checkpoint keeps working as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfake import ImageDeepfakeDetector
from deepfake.engine import DetectionEngine
from deepfake.errors import ModelMismatchError
from deepfake.interfaces.dashboard import Workbench
from deepfake.loading import load_model, save_checkpoint
from deepfake.model import ModelConfig, combine_heads, head_logits
from deepfake.results import HISTORY_COLUMNS
from deepfake.wording import evidence_kind_sentence, verdict_sentence


@pytest.fixture(scope="module")
def two_heads(two_head_checkpoint) -> DetectionEngine:
    return DetectionEngine.load(two_head_checkpoint, device="cpu")


def test_checkpoint_round_trips_the_heads_and_their_calibration(two_head_checkpoint):
    loaded = load_model(two_head_checkpoint)
    assert loaded.config.heads == ("blending", "generation")
    assert loaded.config.combine_weights == (0.8, 1.2) and loaded.config.combine_bias == -0.3
    assert loaded.config.head_temperatures == (1.5, 0.7)
    assert loaded.module.classifier.out_features == 2


def test_scores_are_the_calibrated_combination_of_the_heads(two_heads, hopper_rgb):
    crop = two_heads.crop(hopper_rgb, two_heads.faces_for([hopper_rgb])[0][0].box).pixels
    scores = two_heads.score_heads([crop])
    with torch.inference_mode():
        logits = head_logits(two_heads.model.module, two_heads._tensor([crop]), two_heads.model.config)[0].numpy()
    combined = 1 / (1 + np.exp(-(0.8 * logits[0] + 1.2 * logits[1] - 0.3)))
    assert scores.fake[0] == pytest.approx(combined, abs=1e-5)
    assert scores.heads[0] == pytest.approx(1 / (1 + np.exp(-logits / np.array([1.5, 0.7]))), abs=1e-5)
    explained, cams = two_heads.score_and_cams([crop])  # the explaining pass scores the same way
    assert explained.fake[0] == pytest.approx(scores.fake[0], abs=1e-5) and cams.shape == (1, 224, 224)


def test_each_head_can_be_explained_on_its_own(two_heads, hopper_rgb):
    crop = two_heads.crop(hopper_rgb, two_heads.faces_for([hopper_rgb])[0][0].box).pixels
    assert two_heads.cam_targets == ("fake", "blending", "generation")
    maps = {target: two_heads.cams([crop], target=target)[0] for target in two_heads.cam_targets}
    assert not np.allclose(maps["blending"], maps["generation"])
    with pytest.raises(ValueError, match="unknown heatmap target"):
        two_heads.cams([crop], target="nonsense")


def test_results_carry_both_scores_everywhere(two_heads, hopper_jpeg_bytes):
    result = ImageDeepfakeDetector(engine=two_heads).detect(hopper_jpeg_bytes, name="hopper.jpg")
    face = result.faces[0]
    assert set(face.head_probabilities) == {"blending", "generation"}
    data = result.to_dict()
    dominant = max(face.head_probabilities, key=face.head_probabilities.get)
    assert data["dominant_evidence"] == data["faces"][0]["dominant_evidence"] == dominant
    assert data["generation_probability"] == round(face.head_probabilities["generation"], 6)
    row = result.history_row()
    assert {"blending_probability", "generation_probability", "dominant_evidence"} <= set(HISTORY_COLUMNS) <= set(row)
    # In words, when the verdict is FAKE: which kind of evidence it rests on.
    fake = ImageDeepfakeDetector(engine=two_heads).rejudge(result, 0.0)
    words = "looks generated" if dominant == "generation" else "blended into the photo"
    assert words in evidence_kind_sentence(fake) and words in verdict_sentence(fake)
    # Each head's probability is its own calibration, not a share of the verdict's: the sentence says so.
    generation = f"generation {face.head_probabilities['generation']:.0%}"
    assert f"each kind on its own: {generation}" in evidence_kind_sentence(fake)


def test_dashboard_heatmap_can_pick_a_head(two_heads, hopper_jpeg_bytes):
    bench = Workbench(two_heads)
    analysis = bench.analyze(hopper_jpeg_bytes, "hopper.jpg", threshold=0.6)
    combined = bench.view(analysis, 0.6, "gradcam")
    generation = bench.view(analysis, 0.6, "gradcam", "generation")
    assert generation.fake_probability == combined.fake_probability  # the score stays; only the map changes
    assert not np.allclose(generation.faces[0].cam, combined.faces[0].cam)
    assert set(analysis.explained) == {("gradcam", "fake"), ("gradcam", "generation")}


def test_one_logit_checkpoints_still_work(engine, hopper_jpeg_bytes):
    assert engine.heads == ("fake",) and engine.cam_targets == ("fake",)
    result = ImageDeepfakeDetector(engine=engine).detect(hopper_jpeg_bytes, name="hopper.jpg")
    assert result.faces[0].head_probabilities == {}
    assert result.to_dict()["dominant_evidence"] is None and result.history_row()["blending_probability"] is None
    assert evidence_kind_sentence(result) == ""


def test_a_config_whose_heads_do_not_match_its_weights_is_refused(tmp_path):
    from tests.conftest import random_model

    path = tmp_path / "odd.pth"
    config = ModelConfig(arch="efficientnet_lite0", heads=("blending", "generation"), combine_weights=(1.0,),
                         head_temperatures=(1.0, 1.0))  # fmt: skip
    save_checkpoint(path, random_model(outputs=2), config)
    with pytest.raises(ModelMismatchError, match="2 heads"):
        load_model(path)


def test_a_mixture_combination_scores_as_its_formula_and_explains(tmp_path, hopper_rgb):
    """v2.3's form: FAKE logit = logsumexp(weights * head logits + offsets) + bias, through loading,
    scoring and the explaining pass."""
    from tests.conftest import random_model

    path = tmp_path / "mixture.pth"
    config = ModelConfig(arch="efficientnet_lite0", heads=("blending", "generation"), combine="mixture",
                         combine_weights=(0.9, 1.4), combine_offsets=(-1.0, -0.5), combine_bias=0.2,
                         head_temperatures=(1.5, 0.7))  # fmt: skip
    save_checkpoint(path, random_model(1, outputs=2), config)
    engine = DetectionEngine.load(path, device="cpu")
    assert engine.model.config.combine == "mixture" and engine.model.config.combine_offsets == (-1.0, -0.5)
    crop = engine.crop(hopper_rgb, engine.faces_for([hopper_rgb])[0][0].box).pixels
    with torch.inference_mode():
        logits = head_logits(engine.model.module, engine._tensor([crop]), engine.model.config)[0].numpy()
    combined = np.logaddexp(0.9 * logits[0] - 1.0, 1.4 * logits[1] - 0.5) + 0.2
    assert engine.score_heads([crop]).fake[0] == pytest.approx(1 / (1 + np.exp(-combined)), abs=1e-5)
    explained, cams = engine.score_and_cams([crop])
    assert explained.fake[0] == pytest.approx(1 / (1 + np.exp(-combined)), abs=1e-5) and np.ptp(cams[0]) > 0


def test_a_mixture_with_knees_scores_as_its_formula_and_survives_a_save(tmp_path):
    """v2.14's knees: each mixture term gains slope * max(0, logit - knot); a head whose logit stays
    under its knot scores as the plain mixture."""
    from tests.conftest import random_model

    config = ModelConfig(arch="efficientnet_lite0", heads=("blending", "generation"), combine="mixture",
                         combine_weights=(0.9, 0.3), combine_offsets=(-1.0, -0.5), head_temperatures=(1.0, 1.0),
                         combine_knots=(50.0, -1.0), combine_slopes=(2.0, 0.7))  # fmt: skip
    assert ModelConfig.from_dict(config.to_dict()) == config
    logits = torch.tensor([[0.5, 3.0], [-2.0, -4.0]], dtype=torch.float64)
    expected = [np.logaddexp(0.9 * 0.5 - 1.0, 0.3 * 3.0 - 0.5 + 0.7 * 4.0), np.logaddexp(0.9 * -2.0 - 1.0, 0.3 * -4.0 - 0.5)]
    assert combine_heads(logits, config).numpy() == pytest.approx(expected, abs=1e-9)
    save_checkpoint(tmp_path / "knees.pth", random_model(outputs=2), config)
    assert load_model(tmp_path / "knees.pth").config == config


@pytest.mark.parametrize(("changes", "message"), [({"combine": "product"}, "Unknown head combination"),
                                                  ({"combine": "mixture"}, "one offset per head"),
                                                  ({"combine_knots": (0.0, 1.0), "combine_slopes": (1.0, 1.0)},
                                                   "Knees need the mixture form"),
                                                  ({"combine": "mixture", "combine_offsets": (0.0, 0.0),
                                                    "combine_knots": (0.0, 1.0)}, "one knot and one slope")])  # fmt: skip
def test_a_combination_this_version_cannot_compute_is_refused(tmp_path, changes, message):
    from tests.conftest import random_model

    path = tmp_path / "odd.pth"
    config = ModelConfig(arch="efficientnet_lite0", heads=("blending", "generation"), combine_weights=(1.0, 1.0),
                         head_temperatures=(1.0, 1.0), **changes)  # fmt: skip
    save_checkpoint(path, random_model(outputs=2), config)
    with pytest.raises(ModelMismatchError, match=message):
        load_model(path)
