"""The real dashboard in headless Chromium: ``streamlit run app.py`` on a free port, a photo and a
video dropped into the uploader while a second tab analyses a sample, the heatmap view, CSV and
JSON downloads, and screenshots in test-artifacts/ for a person to look at."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from provenance_samples import LEAKED_COORDINATES, camera_exif, reencode, signed_ai_photo_with_gps

from deepfake.evaluation import evaluate
from deepfake.evaluation.metrics import summarize, threshold_sweep

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]  # fmt: skip
CARD = '[class*="st-key-result-"]'
VERDICTS = {"REAL", "FAKE", "NO FACE"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_reports(folder: Path) -> Path:
    """A reports folder as ``deepfake.evaluate`` writes it, from made-up scores (for the view only)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.clip(0.25 + 0.45 * labels + rng.normal(0, 0.18, 400), 0, 1)
    level = summarize(labels, scores, 0.6)
    report = {
        "model": {"name": "efficientnet_lite0-deepfake", "version": "test", "trained_on": ["synthetic"],
                  "temperature": 1.0},
        "protocol": {"data": "synthetic scores (browser test)", "split": "val", "cache": None, "pseudo_fakes": False,
                     "max_per_source": None, "seed": 0, "threshold": 0.6},
        "image_level": level, "face_level": level, "threshold_sweep": threshold_sweep(labels, scores),
        "files": {"scored": 400, "unreadable": [], "no_face": [], "several_faces": 0},
        "by_source": {"real:lfw": level, "fake:stylegan": level}, "by_group": {},
    }  # fmt: skip
    report["plots"] = evaluate._plots(labels, scores, 0.6, folder, "")
    (folder / "metrics.json").write_text(json.dumps(report, indent=1, default=float))
    evaluate.write_reports(report, folder)
    return folder


@pytest.fixture(scope="module")
def server(random_checkpoint, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    env = {**os.environ, "DEEPFAKE_MODEL": str(random_checkpoint), "PYTHONUNBUFFERED": "1",
           "DEEPFAKE_REPORTS": str(synthetic_reports(tmp_path_factory.mktemp("reports")))}  # fmt: skip
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]  # fmt: skip
    log = (ARTIFACTS / "streamlit.log").open("w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start; see {ARTIFACTS / 'streamlit.log'}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def wait_for_cards(page, count: int) -> list[str]:
    """Wait until ``count`` result cards are complete (each ends with its report button); return their texts."""
    cards = page.locator(CARD)
    sync_api.expect(cards).to_have_count(count, timeout=150_000)
    sync_api.expect(cards.locator('[class*="st-key-report-"] button')).to_have_count(count, timeout=60_000)
    texts = [cards.nth(i).inner_text() for i in range(count)]
    assert all(any(text.startswith(verdict + " ") for verdict in VERDICTS) for text in texts), texts  # badge first
    return texts


def download(page, key: str) -> str:
    with page.expect_download(timeout=60_000) as info:
        page.locator(f".st-key-{key} button").click()
    return Path(info.value.path()).read_text()


def test_dashboard_in_a_browser(server, hopper_jpeg_bytes, synthetic_clip):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 2400})
            page, other = context.new_page(), context.new_page()
            for tab in (page, other):
                tab.goto(server, timeout=90_000)
                tab.locator("input[type=file]").wait_for(state="attached", timeout=120_000)

            # Two browser tabs at once: files dropped in one, a sample tried in the other.
            page.set_input_files("input[type=file]", [
                {"name": "grace_hopper.jpg", "mimeType": "image/jpeg", "buffer": hopper_jpeg_bytes},
                {"name": "clip.mp4", "mimeType": "video/mp4", "buffer": synthetic_clip},
            ])  # fmt: skip
            other.get_by_role("button", name="Try a fake made from it").click()
            texts = wait_for_cards(page, 2)
            assert "grace_hopper.jpg" in texts[0] and "clip.mp4" in texts[1]
            assert "Fake probability over time" in texts[1]
            other_texts = wait_for_cards(other, 1)
            assert "sample_fake_grace_hopper.png" in other_texts[0]
            sync_api.expect(page.locator(f"{CARD} video")).to_have_count(1)  # the annotated video plays in the page

            photo = page.locator(CARD).filter(has_text="grace_hopper.jpg")
            photo.get_by_text("Heatmap: where the model looked").click()
            sync_api.expect(photo.get_by_text("In words:")).to_be_visible(timeout=30_000)
            sync_api.expect(photo.locator("img")).to_have_count(4)  # gauge, face crop, original, heatmap
            video = page.locator(CARD).filter(has_text="clip.mp4")
            video.get_by_text("Heatmap: where the model looked").click()
            sync_api.expect(video.get_by_text("most suspicious frames:")).to_be_visible(timeout=30_000)
            photo.get_by_text("Grad-CAM++").click()  # a rerun: the open views must stay open
            sync_api.expect(photo.get_by_role("radio", name="Grad-CAM++")).to_be_checked(timeout=30_000)
            sync_api.expect(video.get_by_text("most suspicious frames:")).to_be_visible(timeout=30_000)
            page.wait_for_timeout(1000)  # let the expanders finish opening
            page.screenshot(path=ARTIFACTS / "dashboard-analyse.png", animations="disabled")
            photo.screenshot(path=ARTIFACTS / "dashboard-photo-card.png", animations="disabled")
            video.screenshot(path=ARTIFACTS / "dashboard-video-card.png", animations="disabled")

            page.get_by_role("tab", name="History").click()
            rows = list(csv.DictReader(io.StringIO(download(page, "download-csv"))))
            assert [r["file_name"] for r in rows] == ["grace_hopper.jpg", "clip.mp4"]
            assert all(r["verdict"] in VERDICTS for r in rows)
            assert [r["media_type"] for r in rows] == ["image", "video"] and int(rows[1]["frames"]) > 1
            payload = json.loads(download(page, "download-json"))
            assert [r["file_name"] for r in payload["rows"]] == ["grace_hopper.jpg", "clip.mp4"]
            assert [r["verdict"] for r in payload["rows"]] == [r["verdict"] for r in rows]
            assert [r["source"] for r in payload["results"]] == ["grace_hopper.jpg", "clip.mp4"]
            report = download(page, "download-html")
            assert "data:image/png;base64," in report and "clip.mp4" in report
            page.screenshot(path=ARTIFACTS / "dashboard-history.png", animations="disabled")

            page.get_by_role("tab", name="Model performance").click()
            sync_api.expect(page.get_by_text("How well it separates real from fake")).to_be_visible()
            page.screenshot(path=ARTIFACTS / "dashboard-performance.png", animations="disabled")

            other.get_by_role("tab", name="History").click()
            other_rows = list(csv.DictReader(io.StringIO(download(other, "download-csv"))))
            assert [r["file_name"] for r in other_rows] == ["sample_fake_grace_hopper.png"], "histories are per tab"
            other.get_by_role("tab", name="Analyse").click()
            other.screenshot(path=ARTIFACTS / "dashboard-second-tab.png", animations="disabled")
        finally:
            browser.close()


def test_evidence_panel_in_a_browser(server, hopper_jpeg_bytes):
    """A photo signed as AI-generated (with GPS) and a phone's HEIC photo, dropped into the uploader."""
    heic = reencode(hopper_jpeg_bytes, "HEIF", quality=85, exif=camera_exif(gps=True).tobytes())
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.goto(server, timeout=90_000)
            page.locator("input[type=file]").wait_for(state="attached", timeout=120_000)
            page.set_input_files("input[type=file]", [
                {"name": "generated.jpg", "mimeType": "image/jpeg", "buffer": signed_ai_photo_with_gps(hopper_jpeg_bytes)},
                {"name": "IMG_0001.HEIC", "mimeType": "image/heic", "buffer": heic},
            ])  # fmt: skip
            texts = wait_for_cards(page, 2)
            assert texts[0].startswith("FAKE ") and "generated.jpg" in texts[0] and "IMG_0001.HEIC" in texts[1]
            card = page.locator(CARD).filter(has_text="generated.jpg")
            panel = card.locator('[class*="st-key-evidence-"]')
            sync_api.expect(panel).to_contain_text("decides the verdict")
            sync_api.expect(panel).to_contain_text("trainedAlgorithmicMedia")
            sync_api.expect(panel).to_contain_text("the signer is not in your trust list")
            sync_api.expect(panel).to_contain_text("the coordinates are left out")
            sync_api.expect(panel).to_contain_text("Missing metadata is not evidence")
            panel.get_by_text("Raw fields behind the evidence").click()
            sync_api.expect(panel.get_by_text('"c2pa.ai_generated"').first).to_be_visible(timeout=30_000)
            phone = page.locator(CARD).filter(has_text="IMG_0001.HEIC")
            sync_api.expect(phone.locator('[class*="st-key-evidence-"]')).to_contain_text("Canon EOS R5")
            assert not any(c in page.content() for c in LEAKED_COORDINATES)
            page.wait_for_timeout(500)
            card.screenshot(path=ARTIFACTS / "dashboard-evidence-card.png", animations="disabled")
        finally:
            browser.close()

