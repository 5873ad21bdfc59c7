"""Training curves and image grids as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from competition.io import atomic_path  # noqa: E402


def save_figure(figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_training_curves(metrics: pd.DataFrame, baseline: dict, path: str | Path) -> Path:
    """Loss on the left; validation mAP@10 (what epochs are chosen by) for seen/unseen
    landmarks, with the untrained backbone's score dashed."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(metrics["epoch"], metrics["loss"], marker="o", color="tab:gray")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    for group, colour in (("seen", "tab:blue"), ("unseen", "tab:orange")):
        column = f"{group}_map@10"
        if column in metrics and metrics[column].notna().any():
            right.plot(metrics["epoch"], metrics[column], marker="o", color=colour, label=f"{group} (trained)")
            if column in baseline:
                right.axhline(baseline[column], color=colour, linestyle="--", label=f"{group} (pretrained)")
    # the axis fits the values (with a margin): differences of 0.01 are what epochs are chosen by
    right.set(xlabel="epoch", ylabel="mAP@10", title="validation retrieval (held-out photos)")
    right.margins(y=0.15)
    right.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)
