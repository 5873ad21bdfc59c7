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
    """Loss on the left; validation top-1 for seen/unseen with the untrained baseline dashed."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(metrics["epoch"], metrics["loss"], marker="o", color="tab:gray")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    for group, colour in (("seen", "tab:blue"), ("unseen", "tab:orange")):
        column = f"{group}_top1"
        if column in metrics and metrics[column].notna().any():
            right.plot(metrics["epoch"], metrics[column], marker="o", color=colour, label=f"{group} (trained)")
            if f"{group}_top1" in baseline:
                right.axhline(baseline[column], color=colour, linestyle="--", label=f"{group} (pretrained)")
    right.set(xlabel="epoch", ylabel="top-1", title="validation retrieval", ylim=(0, 1.02))
    right.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)
