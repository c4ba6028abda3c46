"""The layout's promises: the product runs without the training lab, and the old entry points work."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_detection_does_not_import_the_lab(random_checkpoint, hopper_jpeg_bytes, tmp_path):
    photo = tmp_path / "hopper.jpg"
    photo.write_bytes(hopper_jpeg_bytes)
    loaded = _run(
        "import sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from deepfake import ImageDeepfakeDetector\n"
        f"result = ImageDeepfakeDetector(model_path={str(random_checkpoint)!r}).detect({str(photo)!r}, explain=True)\n"
        "assert result.faces, 'the photo has a face'\n"
        "print(sorted(m for m in sys.modules if m.startswith(('deepfake.training', 'deepfake.evaluation'))))\n"
    )
    assert loaded == "[]"


def test_module_entry_points_answer_help():
    for module in ("deepfake", "deepfake.train", "deepfake.evaluate"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (module, done.stderr)
        assert "usage:" in done.stdout
