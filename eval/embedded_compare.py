"""Two embedded-model candidates on the same prompts, as paired differences.

    python -m eval.embedded_compare --a runs/checks/v3-test --b runs/checks/v4-test \
        --data runs/data128 --split test --out docs/embedded/checks/v4-vs-v3-test.json

Both folders are :mod:`eval.embedded_check` outputs of the same split and count (prompt i with
seed i in both), so each prompt is answered by both models. The differences B − A of KID (a
bootstrap that draws the real covers and the prompts once per replicate for both models,
:func:`eval.metrics.kid_replicates`) and of palette and composition accuracy (the same prompt
draws) carry 95% intervals that contain them; n is the prompts and the real covers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from eval.composition import CompositionClassifier, activity_labels, features_of
from eval.embedded_check import at_kid_size, read_rows
from eval.metrics import bootstrap, interval_from_replicates, kid_replicates
from eval.prompt_following import histograms, prompt_hits


def _paired_accuracy(a: np.ndarray, b: np.ndarray, *, resamples: int, seed: int) -> dict:
    """B − A of per-prompt hits: the bootstrap of the per-prompt differences, which draws the
    same prompts for both models."""
    estimate = bootstrap(lambda d: float(d.mean()), (b - a,), resamples=resamples, seed=seed)
    return {
        "a": float(a.mean()),
        "b": float(b.mean()),
        "value": estimate.value,
        "low": estimate.low,
        "high": estimate.high,
    }


def compare(args: argparse.Namespace) -> dict[str, Any]:
    from eval.features import cached_features, load_inception

    first = json.loads((Path(args.a) / "check.json").read_text(encoding="utf-8"))
    second = json.loads((Path(args.b) / "check.json").read_text(encoding="utf-8"))
    if (first["split"], first["generated"]) != (second["split"], second["generated"]):
        raise SystemExit("error: the two checks answered different prompts.")
    count = first["generated"]
    data = Path(args.data) / "covers"
    real_paths, rows = read_rows(data / args.split)
    images = {
        side: sorted((Path(folder) / "images").glob("*.png"))[:count]
        for side, folder in (("a", args.a), ("b", args.b))
    }
    classifier = CompositionClassifier.load(Path(args.classifier))
    truth = np.asarray(activity_labels(rows)[:count])
    genres = [row["genre"] for row in rows]
    real_hist = histograms(real_paths)
    composition, palette = {}, {}
    for side, paths in images.items():
        composition[side] = (np.asarray(classifier.predict(features_of(paths))) == truth) * 1.0
        palette[side] = prompt_hits(real_hist, genres, histograms(paths), genres[:count])
    inception = load_inception(args.inception)
    real = cached_features(
        at_kid_size(real_paths, Path(args.cache) / f"real-{args.split}"),
        inception,
        Path(args.cache),
    )
    generated = [
        cached_features(at_kid_size(images[side], Path(folder) / "kid"), inception, None)
        for side, folder in (("a", args.a), ("b", args.b))
    ]
    values, reps = kid_replicates(real, generated, resamples=args.resamples, seed=0)
    kid = interval_from_replicates(float(values[1] - values[0]), reps[:, 1] - reps[:, 0])
    result = {
        "split": args.split,
        "prompts": count,
        "real": len(rows),
        "a": Path(args.a).name,
        "b": Path(args.b).name,
        "kid_difference": {
            "a": float(values[0]),
            "b": float(values[1]),
            "value": kid.value,
            "low": kid.low,
            "high": kid.high,
        },
        "palette_difference": _paired_accuracy(
            palette["a"], palette["b"], resamples=args.resamples, seed=1
        ),
        "composition_difference": _paired_accuracy(
            composition["a"], composition["b"], resamples=args.resamples, seed=2
        ),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.embedded_compare", description=__doc__)
    parser.add_argument("--a", required=True, help="an eval.embedded_check output folder")
    parser.add_argument("--b", required=True, help="another, same split and count")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--classifier", default="runs/composition-classifier.json")
    parser.add_argument("--cache", default="runs/check-cache")
    parser.add_argument("--inception", default=None)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    result = compare(args)
    for name, scale in (
        ("kid_difference", 1e3),
        ("palette_difference", 100),
        ("composition_difference", 100),
    ):
        block = result[name]
        print(
            f"{name}: {block['b'] * scale:.1f} - {block['a'] * scale:.1f} = "
            f"{block['value'] * scale:+.1f} ({block['low'] * scale:+.1f} – {block['high'] * scale:+.1f}), "
            f"n = {result['prompts']} prompts / {result['real']} real"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
