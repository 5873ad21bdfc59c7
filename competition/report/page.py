"""`compete report`: an HTML page and PNGs that show what a submission gets right and wrong.

- queries.png: each query beside its top-k, correct matches framed green, wrong red
  (failures first, since those are what a person needs to look at);
- per_class.png: top-1 accuracy per landmark, seen and unseen coloured apart;
- confusion.png: true landmark vs the landmark of the top-1 result;
- embedding_map.png: t-SNE of the gallery embeddings the submission ranked with,
  coloured by landmark (needs the vectors `compete submit` keeps in runs/).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from competition.data.discover import natural_key
from competition.data.images import UnreadableImage, read_image
from competition.errors import CompeteError
from competition.evaluate.scoring import score_file
from competition.io import atomic_write_text, counted, may_replace
from competition.report.plots import plt, save_figure
from competition.report.sheets import GREEN, RED, Tile, render_sheet, save_png
from competition.report.tables import scores_html
from competition.runs import embeddings_file


def _thumbnail(path: Path) -> np.ndarray:
    try:
        return read_image(path, max_side=256)
    except UnreadableImage:
        return np.full((64, 64, 3), 90, np.uint8)


def query_sheet(query_paths, query_labels, result_paths, hits, out: Path, tile: int = 128) -> Path:
    rows = []
    for path, label, results, row_hits in zip(query_paths, query_labels, result_paths, hits):
        cells = [Tile(_thumbnail(path), "query")]
        cells += [
            Tile(_thumbnail(r), f"#{rank + 1} {r.name}", GREEN if hit else RED)
            for rank, (r, hit) in enumerate(zip(results, row_hits))
        ]
        rows.append((f"{path.name}\n{label}\n{'correct' if row_hits[0] else 'wrong'} at top-1", cells))
    return save_png(render_sheet(rows, tile), out)


def per_class_figure(per_class: dict[str, float], seen: set[str] | None, out: Path) -> Path:
    ordered = sorted(per_class.items(), key=lambda item: (item[1], item[0]))
    figure, axis = plt.subplots(figsize=(8, max(3, 0.16 * len(ordered))))
    colours = ["#3874c8" if seen and label in seen else "#e08a1e" for label, _ in ordered]
    axis.barh(range(len(ordered)), [value for _, value in ordered], color=colours)
    for row, (_, value) in enumerate(ordered):  # the value written beside each bar: a 0.0 bar is no bar
        axis.text(value + 0.01, row, f"{value:.2f}", va="center", fontsize=5, color="#c0392b" if value == 0 else "#333")
    axis.set_yticks(range(len(ordered)), [label for label, _ in ordered], fontsize=6)
    axis.set_xlim(0, 1.08)
    axis.set_xlabel("top-1 accuracy of the landmark's queries")
    axis.set_title("Per-landmark top-1 (blue: in train/, orange: unseen)" if seen else "Per-landmark top-1")
    return save_figure(figure, out)


CONFUSION_CLASSES = 30  # beyond this many rows the labels cannot be read: the most confused are kept


def confusion_figure(true_labels: list[str], predicted: list[str], out: Path) -> Path:
    from sklearn.metrics import confusion_matrix

    every = sorted(set(true_labels) | set(predicted), key=natural_key)
    matrix = confusion_matrix(true_labels, predicted, labels=every)
    mistakes = matrix.sum(axis=0) + matrix.sum(axis=1) - 2 * np.diag(matrix)  # wrong as truth or as answer
    keep = sorted(np.argsort(-mistakes, kind="stable")[:CONFUSION_CLASSES]) if len(every) > CONFUSION_CLASSES else []
    classes = [every[i] for i in keep] if keep else every
    matrix = matrix[np.ix_(keep, keep)] if keep else matrix
    size = min(12, 3 + 0.25 * len(classes))
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues", interpolation="nearest")
    ticks = range(len(classes))
    axis.set_xticks(ticks, classes, rotation=90, fontsize=7)
    axis.set_yticks(ticks, classes, fontsize=7)
    axis.set_xlabel("landmark of the top-1 result")
    axis.set_ylabel("true landmark of the query")
    which = f"the {len(classes)} most confused of {len(every)} landmarks" if keep else "off-diagonal = mistakes"
    axis.set_title(f"Confusions at top-1 ({which})")
    return save_figure(figure, out)


def embedding_map_figure(vectors: np.ndarray, labels: list[str], seen: set[str] | None, out: Path) -> Path:
    from sklearn.manifold import TSNE

    points = TSNE(
        n_components=2,
        init="pca",
        perplexity=min(30.0, max(2.0, (len(vectors) - 1) / 3)),
        method="exact" if len(vectors) <= 1000 else "barnes_hut",  # exact is quicker on small sets
        random_state=0,
    ).fit_transform(vectors)
    classes = sorted(set(labels))
    colour_of = {c: plt.get_cmap("tab20")(i % 20) for i, c in enumerate(classes)}
    figure, axis = plt.subplots(figsize=(8, 8))
    for marker, group in (("o", True), ("^", False)):
        mask = np.array([(seen is None or label in seen) == group for label in labels])
        if mask.any():
            axis.scatter(
                points[mask, 0],
                points[mask, 1],
                s=14,
                marker=marker,
                c=[colour_of[label] for label, m in zip(labels, mask) if m],
            )
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title("Gallery embeddings, t-SNE, one colour per landmark" + (" (▲ unseen)" if seen else ""))
    return save_figure(figure, out)


GENERATOR = '<meta name="generator" content="compete report">'  # marks a page compete may replace
PICTURES = ("queries.png", "per_class.png", "confusion.png", "embedding_map.png")
PAGE = (
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">"""
    + GENERATOR
    + """<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; background: #fafafa; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; }}
img {{ max-width: 100%; border: 1px solid #ddd; background: white; }} section {{ margin-bottom: 2.5em; }}
.note {{ color: #666; }}
</style></head><body>
<h1>{title}</h1>
<p class="note">{subtitle}</p>
{scores}
{sections}
</body></html>
"""
)


def check_report_folder(out_dir: Path) -> None:
    """Refuse a folder whose page or pictures compete did not write: a report replaces only its own."""
    page = out_dir / "index.html"
    ours = page.is_file() and GENERATOR in page.read_text(encoding="utf-8", errors="replace")
    clashing = [name for name in ("index.html", *PICTURES) if not may_replace(out_dir / name)]
    if clashing and not ours:
        raise CompeteError(
            f"--out {out_dir} holds {', '.join(clashing)} that compete report did not write: not replaced; "
            "choose another --out"
        )


def write_report(
    submission: str | Path,
    data: str | Path,
    out_dir: str | Path,
    runs_dir: str | Path = "runs",
    queries_shown: int = 16,
    results_shown: int = 10,
) -> Path:
    """Write <out_dir>/index.html and its PNGs for a scored submission; returns the page's path.
    The pictures show each query's first `results_shown` results, however many the file ranks
    (a Kaggle file has 100: a picture of all of them is too wide to read)."""
    submission, out_dir = Path(submission), Path(out_dir)
    check_report_folder(out_dir)
    scored = score_file(submission, data)
    ranked, hits, competition = scored.ranked, scored.hits, scored.competition
    gallery_paths = [r.path for r in competition.gallery]
    order = sorted(range(len(hits)), key=lambda i: (bool(hits[i, 0]), i))[:queries_shown]  # failures first
    missing = Path("/nonexistent")
    sections = [
        (
            f"Queries and their top {results_shown} results (green: same landmark, red: another; failures first)",
            query_sheet(
                [competition.query[i].path for i in order],
                [ranked.query_labels[i] for i in order],
                [
                    [gallery_paths[j] if j < len(gallery_paths) else missing for j in ranked.ranking[i, :results_shown]]
                    for i in order
                ],
                hits[order, :results_shown],
                out_dir / PICTURES[0],
            ),
        )
    ]
    sections.append(
        (
            "Top-1 accuracy per landmark",
            per_class_figure(scored.per_class, ranked.seen_classes, out_dir / PICTURES[1]),
        )
    )
    predicted = [str(ranked.gallery_labels[row[0]]) for row in ranked.ranking]
    sections.append(
        ("Confusion matrix at top-1", confusion_figure(ranked.query_labels, predicted, out_dir / PICTURES[2]))
    )
    vectors_file = embeddings_file(runs_dir, submission.stem)
    note = ""
    if vectors_file.exists():
        with np.load(vectors_file, allow_pickle=False) as saved:
            label_of = {r.name: r.label for r in competition.gallery}
            labels = [label_of.get(str(n), "?") for n in saved["gallery_names"]]
            sections.append(
                (
                    "Map of the gallery embeddings (t-SNE)",
                    embedding_map_figure(saved["gallery"], labels, ranked.seen_classes, out_dir / PICTURES[3]),
                )
            )
    else:
        note = f" No embedding map: {vectors_file} not found (made by `compete submit`)."
    body = "\n".join(
        f'<section><h2>{html.escape(title)}</h2><img src="{html.escape(path.name)}" alt="{html.escape(title)}">'
        f"</section>"
        for title, path in sections
    )
    page = PAGE.format(
        title=html.escape(f"Report: {submission.name}"),
        subtitle=html.escape(
            f"{counted(len(ranked.query_labels), 'query')}, {counted(len(gallery_paths), 'gallery image')}, "
            f"data {data}.{note}"
        ),
        scores=scores_html(scored.scores),
        sections=body,
    )
    atomic_write_text(out_dir / "index.html", page)
    return out_dir / "index.html"
