"""Command line: ``python -m deepfake {detect,scan,serve,dashboard,train,evaluate} ...``.

``scan`` analyses folders of images and videos with one shared engine, on a Ray cluster, or through
a running API server (``--server``), and writes the export schema the dashboard uses (CSV and
JSON); one bad file is reported and skipped. Exit codes: 0 all files read, 1 some failed, 2 nothing
could be done (bad arguments, no model, no files, a server that cannot be reached or refuses the
key), 130 stopped with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import NoReturn

from tqdm import tqdm

from deepfake import DetectionEngine, ImageDeepfakeDetector, VideoDeepfakeDetector
from deepfake.errors import ModelError, TrustAnchorsError
from deepfake.exports import CsvStream, history_json
from deepfake.interfaces.scanning import (
    API_KEY_ENV,
    Outcome,
    RemoteScan,
    ScanOptions,
    ServerError,
    analyse_file,
    find_files,
    scan_local,
)
from deepfake.loading import MODEL_ENV
from deepfake.provenance.findings import Finding, heading
from deepfake.provenance.settings import TRUST_ANCHORS_ENV, ProvenanceSettings

log = logging.getLogger("deepfake.interfaces.cli")

# Face detection runs outside the engine's lock, so while one thread finds faces another scores:
# two threads scan 1.7x as fast as one on 2 cores (reports/BENCHMARKS.md).
LOCAL_WORKERS = 2
EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE, EXIT_INTERRUPTED = 0, 1, 2, 130


# --- output -------------------------------------------------------------------------------------


def summary_table(rows: list[dict], seconds: float, workers: int, engine_name: str, top: int = 5) -> str:
    # Files that could not be read as media have no type: they are counted as "other".
    labels = {"image": "images", "video": "videos"}
    if any(r["media_type"] not in labels for r in rows):
        labels["other"] = "other"
    counts = Counter((r["verdict"], r["media_type"] if r["media_type"] in labels else "other") for r in rows)
    rate = len(rows) / seconds if seconds > 0 else 0.0
    lines = [
        f"Scanned {len(rows)} file{'' if len(rows) == 1 else 's'} in {seconds:.1f} s ({rate:.2f} files/s; {engine_name}, {workers} workers).",
        "",
    ]
    lines.append(f"{'verdict':<9}" + "".join(f"{label:>8}" for label in labels.values()) + f"{'total':>8}")
    for verdict in ("REAL", "FAKE", "NO FACE", "ERROR"):
        cells = [counts[(verdict, k)] for k in labels]
        lines.append(f"{verdict:<9}" + "".join(f"{c:>8}" for c in cells) + f"{sum(cells):>8}")
    # Files that declare themselves AI-made are FAKE whatever their score: they come first.
    scored = sorted((r for r in rows if r["verdict"] != "ERROR"),
                    key=lambda r: (not r.get("decided_by"), -float(r["fake_probability"])))  # fmt: skip
    if scored:
        lines += ["", "Most suspicious:"]
        lines += [f"  {float(r['fake_probability']):.4f}  {r['verdict']:<8} {r['file_name']}"
                  + (f"  [decided by {r['decided_by']}]" if r.get("decided_by") else "") for r in scored[:top]]  # fmt: skip
    failed = [r for r in rows if r["verdict"] == "ERROR"]
    if failed:
        lines += ["", f"Failed ({len(failed)}):"] + [f"  {r['file_name']}: {r['error']}" for r in failed]
    return "\n".join(lines)


# --- commands -----------------------------------------------------------------------------------


def _load_engine(args: argparse.Namespace) -> DetectionEngine:
    return DetectionEngine.load(args.model, device=args.device, trust_pickle=args.trust_pickle)


def _provenance(args: argparse.Namespace) -> ProvenanceSettings:
    return ProvenanceSettings.load(args.trust_anchors, include_location=args.include_location)


def cmd_detect(args: argparse.Namespace) -> int:
    provenance = _provenance(args)  # a bad trust-anchors file fails before the model loads
    engine = _load_engine(args)
    images = ImageDeepfakeDetector(engine=engine, provenance=provenance)  # output folder: per call
    videos = VideoDeepfakeDetector(engine=engine, provenance=provenance)
    options = ScanOptions(args.threshold, not args.no_explain, args.heatmaps, args.num_frames, provenance)
    row, result = analyse_file(images, videos, args.file, options)
    if result is None:
        print(f"error: {row['error']}", file=sys.stderr)
        return EXIT_SOME_FAILED
    if args.json:
        print(json.dumps(result, indent=1))
        return EXIT_OK
    print(f"{result['source']}: {result['verdict']}  (fake probability {result['fake_probability']:.4f}, "
          f"threshold {result['threshold']:.2f}, confidence {result['confidence']:.1%})")  # fmt: skip
    what = f"{result['media_type']} {result['width']}x{result['height']}, {row['faces']} face(s)"
    if result["media_type"] == "video":
        what += f", {result['frames_analyzed']} frames analysed ({result['aggregation'].get('rule')} rule)"
    print(f"{what}; {result['model_name']} {result['model_version']}; {result['timings']['total_ms']:.0f} ms")
    for line in [result["explanation"], *result["warnings"]]:
        if line:
            print(line)
    if args.heatmaps and result.get("heatmap_overlay_path"):
        print(f"heatmap: {result['heatmap_overlay_path']}")
    print("\nEvidence" + (f" (the verdict was decided by {result['decided_by']}):" if result["decided_by"] else ":"))
    for finding in (Finding(**f) for f in result["evidence"]):
        print(f"  - {heading(finding)}: {finding.summary}")
    return EXIT_OK


def _local_only(args: argparse.Namespace) -> list[str]:
    """The flags given that set up a local engine: with --server the server's own settings apply,
    so accepting them would mislead (the env defaults of --model and --trust-anchors are ignored)."""
    given = {"--engine ray": args.engine == "ray", "--address": args.address is not None,
             "--model": args.model != os.environ.get(MODEL_ENV), "--device": args.device is not None,
             "--trust-pickle": args.trust_pickle, "--include-location": args.include_location,
             "--trust-anchors": args.trust_anchors != os.environ.get(TRUST_ANCHORS_ENV)}  # fmt: skip
    return [flag for flag, on in given.items() if on]


def cmd_scan(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    conflicts = _local_only(args) if args.server else []
    if conflicts:
        print(f"error: --server cannot be combined with {', '.join(conflicts)}: the server's model and settings "
              "are used", file=sys.stderr)  # fmt: skip
        return EXIT_UNUSABLE
    files = find_files(args.paths, args.recursive)
    if not files:
        print("error: no images or videos found" + ("" if args.recursive else " (subfolders need --recursive)"),
              file=sys.stderr)  # fmt: skip
        return EXIT_UNUSABLE
    provenance = None if args.server else _provenance(args)  # the server reads provenance with its own settings
    options = ScanOptions(args.threshold, bool(args.heatmaps), args.heatmaps, args.num_frames, provenance)
    workers = args.workers or LOCAL_WORKERS
    with ExitStack() as stack:
        csv_stream = CsvStream(stack.enter_context(open(args.csv, "w", newline=""))) if args.csv else None
        if args.server:
            where = f"server {args.server}"
            outcomes = stack.enter_context(RemoteScan(args.server, args.api_key, options, workers)).run(files)
        elif args.engine == "ray":
            from deepfake.interfaces.scale import RayScan  # Ray is imported only when asked for

            ray_scan = stack.enter_context(RayScan(args.model, options, workers=args.workers, address=args.address,
                                                   device=args.device, trust_pickle=args.trust_pickle))  # fmt: skip
            where, workers, outcomes = "ray", ray_scan.workers, ray_scan.run(files)
        else:
            where, outcomes = "threads", scan_local(files, _load_engine(args), options, workers)
        rows, results = collect(outcomes, len(files), csv_stream, progress=not args.quiet)
    if args.json:
        Path(args.json).write_text(history_json(rows, results))
    print(summary_table(rows, time.perf_counter() - started, workers, where))
    written = [p for p in (args.csv, args.json) if p]
    if written:
        print("\nWrote " + ", ".join(written) + (f"; heatmaps in {args.heatmaps}" if args.heatmaps else ""))
    return EXIT_SOME_FAILED if any(r["verdict"] == "ERROR" for r in rows) else EXIT_OK


def collect(outcomes: Iterator[Outcome], total: int, csv_stream: CsvStream | None,
            progress: bool = True) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Rows and full results, with a progress bar; each row goes to the CSV as it arrives."""
    rows: list[dict] = []
    results: list[dict] = []
    counts: Counter[str] = Counter()
    with tqdm(total=total, unit="file", file=sys.stderr, disable=not progress) as bar:
        for outcome in outcomes:
            rows.append(outcome.row)
            if outcome.result is not None:
                results.append(outcome.result)
            if csv_stream:
                csv_stream.write(outcome.row)
            counts[outcome.row["verdict"]] += 1
            bar.update()
            bar.set_postfix(fake=counts["FAKE"], failed=counts["ERROR"], refresh=False)
    return rows, results


def cmd_serve(args: argparse.Namespace) -> int:
    from deepfake.interfaces.api import ApiSettings, load_key_hashes, serve
    from deepfake.interfaces.jobs import default_data_dir

    try:
        settings = ApiSettings(
            key_hashes=load_key_hashes(args.keys_file),
            rate=args.rate,
            burst=args.burst,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            image_timeout_s=args.image_timeout,
            video_timeout_s=args.video_timeout,
            result_ttl_s=args.result_ttl,
            max_store_bytes=int(args.max_store_mb * 2**20),
            workers=args.workers,
            queue_size=args.queue_size,
            key_queue=args.key_queue,
            analysis_bytes=int(args.analysis_mb * 2**20),
            data_dir=Path(args.data_dir) if args.data_dir else default_data_dir(),
            provenance=_provenance(args),
        )
    except (OSError, ValueError, TrustAnchorsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(settings, _load_engine(args), host=args.host, port=args.port)
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> NoReturn:
    """Replace this process with Streamlit (so it receives signals directly, e.g. as a container's PID 1)."""
    app = Path(__file__).resolve().parents[2] / "app.py"
    if args.model:
        os.environ[MODEL_ENV] = str(Path(args.model).resolve())
    if args.trust_anchors:
        ProvenanceSettings.load(args.trust_anchors)  # checked here: a bad file fails now, not in the browser
        os.environ[TRUST_ANCHORS_ENV] = str(Path(args.trust_anchors).resolve())
    os.chdir(app.parent)  # Streamlit reads .streamlit/config.toml (upload limit, no file watcher) from here
    os.execv(sys.executable, [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
                              "--server.address", args.host, "--server.port", str(args.port)])  # fmt: skip


# --- arguments ----------------------------------------------------------------------------------


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _positive(kind: type):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default=os.environ.get(MODEL_ENV),
                       help=f"checkpoint (default: ${MODEL_ENV}, else models/image_model.pth)")  # fmt: skip
    model.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    model.add_argument("--trust-pickle", action="store_true", help="allow a pickled model (runs code from the file)")
    evidence = argparse.ArgumentParser(add_help=False)
    evidence.add_argument("--trust-anchors", metavar="PEM", default=os.environ.get(TRUST_ANCHORS_ENV),
                          help="certificates of the content-credential (C2PA) signers you trust (default: "
                               f"${TRUST_ANCHORS_ENV}); without them a valid signature is reported as 'signer not "
                               "in your trust list'")  # fmt: skip
    location = argparse.ArgumentParser(add_help=False)
    location.add_argument("--include-location", action="store_true",
                          help="keep GPS coordinates found in files in the output (default: only say that a "
                               "location is present; coordinates can locate a source)")  # fmt: skip
    analysis = argparse.ArgumentParser(add_help=False)
    analysis.add_argument("--threshold", type=_probability, help="FAKE at or above this (default: the model's)")
    analysis.add_argument("--num-frames", type=_positive(int), default=32, help="frames sampled per video")
    analysis.add_argument("--heatmaps", metavar="DIR", help="write Grad-CAM overlays here")

    parser = argparse.ArgumentParser(prog="python -m deepfake", description="Deepfake detection workbench.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    detect = commands.add_parser("detect", parents=[model, analysis, evidence, location],
                                 help="analyse one image or video")  # fmt: skip
    detect.add_argument("file")
    detect.add_argument("--json", action="store_true", help="print the full result as JSON")
    detect.add_argument("--no-explain", action="store_true", help="skip Grad-CAM (faster)")
    detect.set_defaults(run=cmd_detect)

    scan = commands.add_parser("scan", parents=[model, analysis, evidence, location],
                               help="analyse many files; CSV/JSON report",
                               description="Grad-CAM is computed only with --heatmaps.")  # fmt: skip
    scan.add_argument("paths", nargs="+", metavar="PATH", help="files and folders")
    scan.add_argument("--recursive", "-r", action="store_true", help="descend into subfolders")
    scan.add_argument("--csv", metavar="FILE", help="write the results table (written row by row)")
    scan.add_argument("--json", metavar="FILE", help="write the table and every full result")
    scan.add_argument("--workers", type=_positive(int),
                      help="threads sharing one engine (default 2: one finds faces while another scores); with --engine "
                           "ray, actors (default: cluster CPUs); with --server, files on the server at once (default 2)")  # fmt: skip
    scan.add_argument("--engine", choices=["local", "ray"], default="local", help="where to run (default: local)")
    scan.add_argument("--address", help="Ray cluster to join, e.g. ray://head:10001 or head:6379 (default: $RAY_ADDRESS, "
                      "else a local Ray)")  # fmt: skip
    scan.add_argument("--server", metavar="URL",
                      help="analyse on a running API server (python -m deepfake serve), e.g. http://host:8000, instead "
                           "of a local engine: each file is a job there, its result the server's JSON; a full queue or "
                           "the rate limit is waited out, Ctrl-C cancels the jobs left. Not with --engine ray, --address, "
                           "--model, --device, --trust-pickle, --trust-anchors or --include-location: the server's own "
                           "apply")  # fmt: skip
    scan.add_argument("--api-key", metavar="KEY", default=os.environ.get(API_KEY_ENV),
                      help=f"the server's API key (default: ${API_KEY_ENV}; the variable keeps it out of the process "
                           "list)")  # fmt: skip
    scan.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    scan.set_defaults(run=cmd_scan)

    serve = commands.add_parser("serve", parents=[model, evidence, location], help="start the REST API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--keys-file", help="API keys, one a line (plain or sha256:<hex>); also $DEEPFAKE_API_KEYS")
    serve.add_argument("--rate", type=float, default=2.0, help="requests per second per key, refilled (0: no limit)")
    serve.add_argument("--burst", type=_positive(int), default=30, help="requests a key may make at once")
    serve.add_argument("--max-upload-mb", type=_positive(float), default=200.0)
    serve.add_argument("--image-timeout", type=_positive(float), default=60.0, help="seconds")
    serve.add_argument("--video-timeout", type=_positive(float), default=300.0, help="seconds")
    serve.add_argument("--result-ttl", type=_positive(float), default=3600.0, help="seconds a result stays fetchable")
    serve.add_argument("--max-store-mb", type=_positive(float), default=2048.0,
                       help="disk kept for finished results' heatmaps; the oldest go first")  # fmt: skip
    serve.add_argument("--workers", type=_positive(int), default=4, help="analyses at once (others wait)")
    serve.add_argument("--queue-size", type=_positive(int), default=32,
                       help="jobs waiting or running on the server; past it: 503 with Retry-After")  # fmt: skip
    serve.add_argument("--key-queue", type=_positive(int), default=8, help="the same, for one API key")
    serve.add_argument("--analysis-mb", type=_positive(float), default=300.0,
                       help="MiB of uploads analysed at once (an analysis holds about 4x its file in memory); "
                            "larger files take turns, one over it runs alone")  # fmt: skip
    serve.add_argument("--data-dir", metavar="DIR",
                       help="jobs and results (SQLite + files), kept across restarts "
                            "(default: deepfake-workbench/api in the user's data folder)")  # fmt: skip
    serve.set_defaults(run=cmd_serve)

    dashboard = commands.add_parser("dashboard", parents=[model, evidence], help="start the Streamlit dashboard")
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8501)
    dashboard.set_defaults(run=cmd_dashboard)

    # Delegated whole: their own parsers (and their --help) take every argument after the command name.
    for name, about in (("train", "train a model (python -m deepfake.train)"),
                        ("evaluate", "evaluate a model (python -m deepfake.evaluate)")):  # fmt: skip
        commands.add_parser(name, help=about, add_help=False)  # listed in --help; main() hands over first
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from deepfake.training.train import main as train

        train(argv[1:])
        return EXIT_OK
    if argv[:1] == ["evaluate"]:
        from deepfake.evaluation.evaluate import main as evaluate

        evaluate(argv[1:])
        return EXIT_OK
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ModelError, TrustAnchorsError, ServerError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:  # a scan's CSV keeps the rows done so far; jobs on a server were cancelled
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
