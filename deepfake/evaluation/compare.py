"""Compare two evaluations of the same held-out items: ``python -m deepfake.evaluation.compare BASE NEW``.

A made kind's AUC on 150 crops against 150 is known to about ±0.06, but two models scored on the
same items share that draw: the *difference* of their AUCs is known far better. This resamples the
items once for both models and reports, per kind, the AUC difference (NEW − BASE) with its 95%
percentile-bootstrap interval and the share of resamples in which NEW ranks better; the same for the
mean over the kinds BASE scores below the target (or ``--kinds``); and under every condition each
model's false alarms and fakes caught at its threshold, with what NEW catches when it flags no more
real files than BASE (a gain that only moved the threshold shows there as none).

The resampling keeps the protocol's dependence: a made kind's fakes are made from held-out real
crops, so a real crop is drawn together with every fake made from it; real files (shared by every
fake folder) and each fake folder's files are drawn on their own.

Both folders must come from ``python -m deepfake.evaluate`` on the same items (same cache, seed and
cap): their ``scores.csv`` list them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfake.evaluation.evaluate import (
    MADE_KINDS,
    MATCHED,
    SCORES_FILE,
    Unit,
    against_reals,
    fake_kinds,
    read_scores,
)
from deepfake.evaluation.metrics import pairwise_auc

AUC_TARGET = 0.98  # issue 8: held-out AUC per kind, compression matched
RESAMPLES = 2000


@dataclass(frozen=True)
class Evaluation:
    """One evaluation folder: its model, threshold, items and per-condition scores."""

    folder: Path
    version: str
    threshold: float
    units: list[Unit]
    scores: dict[str, np.ndarray]

    @classmethod
    def read(cls, folder: str | Path) -> Evaluation:
        folder = Path(folder)
        if not (folder / SCORES_FILE).is_file():
            raise SystemExit(f"{folder} has no {SCORES_FILE}: evaluate the model again to compare it pair by pair.")
        metrics = json.loads((folder / "metrics.json").read_text())
        units, scores = read_scores(folder / SCORES_FILE)
        return cls(folder, metrics["model"]["version"], metrics["protocol"]["threshold"], units, scores)


def _clusters(units: list[Unit]) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, its stratum and its cluster: a made unit's cluster is its real crop (stratum "made");
    a file is a cluster of its own, in the stratum of the real files or of its fake folder."""
    keys = [("made", u.crop) if u.crop is not None else ("real" if u.label == 0 else u.kind, i)
            for i, u in enumerate(units)]  # fmt: skip
    strata = np.unique([k[0] for k in keys], return_inverse=True)[1]
    clusters = np.unique([f"{k[0]}/{k[1]}" for k in keys], return_inverse=True)[1]
    return strata, clusters


def resample_weights(units: list[Unit], resamples: int, seed: int) -> np.ndarray:
    """[resamples, units] bootstrap weights: each stratum's clusters drawn with replacement, as many as
    it has; a unit weighs as often as its cluster was drawn."""
    strata, clusters = _clusters(units)
    rng = np.random.default_rng(seed)
    weights = np.zeros((resamples, clusters.max() + 1))
    for stratum in np.unique(strata):
        members = np.unique(clusters[strata == stratum])
        weights[:, members] = rng.multinomial(members.size, np.full(members.size, 1 / members.size), resamples)
    return weights[:, clusters]


def _auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    real, fake = labels == 0, labels == 1
    if weights is None:
        return pairwise_auc(scores[real], scores[fake])
    if not (weights[real].any() and weights[fake].any()):
        return float("nan")
    return pairwise_auc(scores[real], scores[fake], weights[real], weights[fake])


def _difference(base: np.ndarray, new: np.ndarray) -> dict:
    """Summary of a difference: as measured (``base``/``new`` hold the full-sample values first)."""
    diffs = new[1:] - base[1:]
    diffs = diffs[np.isfinite(diffs)]  # a tiny kind's resample can lack a class
    low, high = np.quantile(diffs, [0.025, 0.975])
    return {"base": float(base[0]), "new": float(new[0]), "difference": float(new[0] - base[0]),
            "interval": (float(low), float(high)), "share_better": float((diffs > 0).mean())}  # fmt: skip


def _files_at_threshold(base: np.ndarray, new: np.ndarray, real: np.ndarray, fake: np.ndarray, base_threshold: float,
                        new_threshold: float) -> dict:  # fmt: skip
    """Real files flagged and fake files caught by each model at its threshold, and what the new model
    catches at a threshold that flags no more real files than the base does: a gain in ranking that
    only moved the threshold shows there as none."""
    flagged = int((base[real] >= base_threshold).sum())
    reals = np.sort(new[real])[::-1]
    level = reals[flagged] if flagged < reals.size else -np.inf  # above it: at most `flagged` reals
    return {"false_alarms": {"base": flagged, "new": int((new[real] >= new_threshold).sum())},
            "caught": {"base": float((base[fake] >= base_threshold).mean()),
                       "new": float((new[fake] >= new_threshold).mean()),
                       "new_at_base_false_alarms": float((new[fake] > level).mean())}}  # fmt: skip


def compare(base: Evaluation, new: Evaluation, kinds: list[str] | None = None, condition: str = MATCHED,
            resamples: int = RESAMPLES, seed: int = 0) -> dict:  # fmt: skip
    """The paired comparison (see the module's docstring) as a dict."""
    if [(u.kind, u.path, u.crop) for u in base.units] != [(u.kind, u.path, u.crop) for u in new.units]:
        raise SystemExit(f"{base.folder} and {new.folder} scored different items: evaluate both on the same cache "
                         "with the same seed and --per-kind.")  # fmt: skip
    if condition not in base.scores or condition not in new.scores:
        raise SystemExit(f"condition {condition!r} not in both evaluations; they have {list(base.scores)}")
    units, labels = base.units, np.array([u.label for u in base.units])
    all_kinds = fake_kinds(units)
    weights = resample_weights(units, resamples, seed)
    aucs: dict[str, list[np.ndarray]] = {}  # kind -> [base, new]: the AUC as measured, then per resample
    for kind in all_kinds:
        mask = against_reals(units, kind)
        aucs[kind] = []
        for scores in (base.scores[condition][mask], new.scores[condition][mask]):
            measured = _auc(scores, labels[mask])
            aucs[kind].append(np.array([measured] + [_auc(scores, labels[mask], w[mask]) for w in weights]))
    if kinds is None:
        kinds = [k for k in all_kinds if aucs[k][0][0] < AUC_TARGET]
    unknown = set(kinds) - set(all_kinds)
    if unknown:
        raise SystemExit(f"--kinds names kinds not in the evaluation: {sorted(unknown)}; known: {all_kinds}")
    per_kind = {k: {"population": "made" if k in MADE_KINDS else "files", **_difference(*aucs[k])} for k in all_kinds}
    mean = _difference(*(np.mean([aucs[k][side] for k in kinds], axis=0) for side in (0, 1))) if kinds else None
    real_files = np.array([u.label == 0 and u.crop is None for u in units])
    fake_files = np.array([u.label == 1 and u.crop is None for u in units])
    files = {c: _files_at_threshold(base.scores[c], new.scores[c], real_files, fake_files, base.threshold,
                                    new.threshold) for c in base.scores if c in new.scores}  # fmt: skip
    return {"base": {"folder": str(base.folder), "version": base.version, "threshold": base.threshold},
            "new": {"folder": str(new.folder), "version": new.version, "threshold": new.threshold},
            "condition": condition, "resamples": resamples, "seed": seed, "kinds": per_kind,
            "mean_of": kinds, "mean": mean, "real_files": int(real_files.sum()), "fake_files": int(fake_files.sum()), "files": files}  # fmt: skip


def _row(name: str, d: dict) -> str:
    low, high = d["interval"]
    return (f"| {name} | {d['base']:.4f} | {d['new']:.4f} | {d['difference']:+.4f} | {low:+.4f} to {high:+.4f} "
            f"| {d['share_better']:.1%} |")  # fmt: skip


def report_lines(result: dict) -> list[str]:
    base, new = result["base"], result["new"]
    lines = [
        f"# {new['version']} against {base['version']}", "",
        f"Base `{base['folder']}`, new `{new['folder']}`: the same held-out items, {result['condition']} (both "
        f"classes re-saved alike). Difference = new − base; 95% interval and share of resamples in which the new "
        f"model ranks better, from {result['resamples']} paired resamples (a made kind's real crop with the fakes "
        "made from it; files one by one).", "",
        "| kind | AUC base | AUC new | difference | 95% interval | new better |", "|---|---|---|---|---|---|",
        *(_row(kind, d) for kind, d in result["kinds"].items()),
    ]  # fmt: skip
    if result["mean"]:
        lines.append(_row(f"**mean of {', '.join(result['mean_of'])}**", result["mean"]))
    lines += ["", f"Files at each model's threshold: false alarms on the {result['real_files']} real files, fake files "
              f"caught of {result['fake_files']}, and what the new model catches when it flags no more real files "
              "than the base:", "",
              "| condition | false alarms base | false alarms new | caught base | caught new | new, at base's false alarms |",
              "|---|---|---|---|---|---|",
              *(f"| {c} | {v['false_alarms']['base']} | {v['false_alarms']['new']} | {v['caught']['base']:.1%} "
                f"| {v['caught']['new']:.1%} | {v['caught']['new_at_base_false_alarms']:.1%} |"
                for c, v in result["files"].items()), ""]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deepfake.evaluation.compare", description=__doc__.split("\n")[0])
    parser.add_argument("base", help="evaluation folder of the model to beat (e.g. reports)")
    parser.add_argument("new", help="evaluation folder of the candidate")
    parser.add_argument("--kinds", nargs="+", help="kinds to average (default: those the base scores below the target)")
    parser.add_argument("--condition", default=MATCHED, help=f"scores compared (default {MATCHED!r})")
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--out", help="folder for COMPARISON.md and comparison.json (default: the new folder)")
    args = parser.parse_args(argv)
    result = compare(Evaluation.read(args.base), Evaluation.read(args.new), args.kinds, args.condition, args.resamples)
    out = Path(args.out or args.new)
    out.mkdir(parents=True, exist_ok=True)
    lines = report_lines(result)
    (out / "COMPARISON.md").write_text("\n".join(lines))
    (out / "comparison.json").write_text(json.dumps(result, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
