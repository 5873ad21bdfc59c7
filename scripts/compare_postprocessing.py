"""Single model vs ensemble, with and without TTA, whitening, DBA, alpha-QE and re-ranking.

Uses runs that already exist (embeddings are cached per run and TTA, so most rows cost
only the search). Prints top-1/3/10 and mAP@10, overall and on unseen landmarks.

    python scripts/compare_postprocessing.py --single runs/x --ensemble runs/x runs/y --runs-dir runs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from competition.retrieval.postprocess import PostProcess
from competition.retrieval.submit import SubmitConfig, submit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/sample")
    parser.add_argument("--single", required=True)
    parser.add_argument("--ensemble", nargs="+", required=True)
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--out", default="runs/compare-postprocessing")
    args = parser.parse_args()

    both = dict(dba=2, qe=2)
    variants = [
        ("single", [args.single], {}, PostProcess()),
        ("single + flip", [args.single], {"flip": True}, PostProcess()),
        (
            "single + flip + scales 0.707,1,1.414",
            [args.single],
            {"flip": True, "scales": [0.707, 1.0, 1.414]},
            PostProcess(),
        ),
        ("single + PCA-whiten (gallery, full)", [args.single], {}, PostProcess(whiten="gallery", whiten_power=1.0)),
        ("single + PCA-whiten (gallery, power 0.5)", [args.single], {}, PostProcess(whiten="gallery")),
        ("single + α-QE k=2", [args.single], {}, PostProcess(qe=2)),
        ("single + DBA k=2", [args.single], {}, PostProcess(dba=2)),
        ("single + DBA + QE", [args.single], {}, PostProcess(**both)),
        ("single + k-reciprocal (k1=20)", [args.single], {}, PostProcess(rerank=True)),
        ("single + k-reciprocal (k1=8, k2=3)", [args.single], {}, PostProcess(rerank=True, rerank_k1=8, rerank_k2=3)),
        (
            "single + flip + scales + whiten + DBA",
            [args.single],
            {"flip": True, "scales": [0.707, 1.0, 1.414]},
            PostProcess(whiten="gallery", dba=2),
        ),
        ("ensemble", args.ensemble, {}, PostProcess()),
        ("ensemble + pretrained", args.ensemble, {"with_pretrained": 1.0}, PostProcess()),
        ("ensemble + flip", args.ensemble, {"flip": True}, PostProcess()),
        ("ensemble + flip + DBA + QE", args.ensemble, {"flip": True}, PostProcess(**both)),
        ("ensemble + flip + DBA + QE + k-reciprocal", args.ensemble, {"flip": True}, PostProcess(**both, rerank=True)),
    ]
    print("| variant | top-1/3/10 | mAP@10 | unseen top-1/3/10 | seconds |")
    print("|---|---|---|---|---|")
    for index, (label, models, options, steps) in enumerate(variants):
        started = time.time()
        result = submit(
            SubmitConfig(
                data=args.data,
                models=models,
                name=f"post-{index:02d}",
                runs_dir=args.runs_dir,
                submissions_dir=args.out,
                leaderboard=str(Path(args.out) / "leaderboard.md"),
                postprocess=steps,
                if_worse="keep",
                **options,
            ),
            progress=False,
        )
        s = result.scores or {}
        top = "/".join(f"{s.get(f'top{k}', float('nan')):.3f}" for k in (1, 3, 10))
        unseen = "/".join(f"{s.get(f'unseen_top{k}', float('nan')):.3f}" for k in (1, 3, 10))
        print(
            f"| {label} | {top} | {s.get('map@10', float('nan')):.3f} | {unseen} | {time.time() - started:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
