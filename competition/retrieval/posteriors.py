"""Class posteriors of the training landmarks, fused into the ranking.

When a query shows a landmark of `train/`, the training labels say more than any distance:
a classifier on the embedding names the landmark of the query and of every gallery photo.
The ranking then uses

    score(q, g) = cosine(q, g) + weight * gate(q) * gate(g) * P(q) . P(g)

where P(x) is the vector of class posteriors: a gallery photo of the class the query is
classified into moves up by up to `weight`; photos of other landmarks keep their cosine
order. The gate is 1 when every query is known to show a training landmark (`--landmarks
known`), and P(known | photo) on a mixed set (retrieval/landmarks.KnownGate), so a photo of
a landmark training never saw keeps its cosine ranking. The classifier is a multinomial
logistic regression (scikit-learn) on L2-normalised embeddings, fitted in seconds, up to
LOGISTIC_MOST_CLASSES landmarks; above (Google Landmarks: 81k), where a full-batch fit needs
an n x classes matrix, it is the cosine to each landmark's mean embedding (its prototype)
under a softmax, and each photo keeps only its TOP_CLASSES posteriors, as a sparse matrix.
Its strength and the weights are chosen on validation folds (train/label_fusion.py).

The fusion re-orders each query's top candidates by cosine (`rescore`), never an n x n
matrix or appended vectors: O(queries x candidates) at any gallery size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from competition.progress import steps
from competition.retrieval.landmarks import KnownGate
from competition.retrieval.neighbours import best_first
from competition.retrieval.vectors import Rows, as_rows, class_sums, l2_normalize

LOGISTIC_MOST_CLASSES = 2048  # above: class prototypes and sparse posteriors
TOP_CLASSES = 20  # posteriors each photo keeps when they are sparse
ROWS_AT_ONCE = 256  # photos scored against every class at once (256 x 81k floats: 83 MB)
DEVICE_ROWS_AT_ONCE = 2048  # the same on a GPU (2048 x 81k: 0.7 GB, twice for the softmax's sum)
COLUMN_GROUP = 64  # columns whose maximum stands for them in finding a row's top classes
# a query's best photos by cosine that label fusion re-orders: a boost rarely lifts a photo from beyond the
# first thousand (the GLR winners applied theirs to the top 100-1000), and O(queries x 1000) at any gallery size
FUSION_CANDIDATES = 1000


def _row_blocks(rows: int):
    """Slices of at most ROWS_AT_ONCE rows: what is scored against every class (or gallery photo) at once."""
    return (slice(start, start + ROWS_AT_ONCE) for start in range(0, rows, ROWS_AT_ONCE))


def top_posterior(posteriors) -> np.ndarray:
    """Each photo's largest class posterior, dense or sparse rows."""
    if sparse.issparse(posteriors):
        return np.asarray(posteriors.max(axis=1).todense(), np.float32).ravel()
    return posteriors.max(axis=1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    odds = np.exp(logits)
    return (odds / odds.sum(axis=1, keepdims=True)).astype(np.float32)


def top_columns(scores: np.ndarray, top: int, group: int = COLUMN_GROUP) -> np.ndarray:
    """Each row's `top` largest columns, unordered. With many columns, only the `top` groups of
    `group` neighbouring columns whose maxima are largest are partitioned: they hold every one of
    the row's `top` largest, and a group's maximum costs a fraction of a partition of the row."""
    rows, width = scores.shape
    if width <= 2 * top * group or width % group:
        return np.argpartition(scores, width - top, axis=1)[:, width - top :]
    groups = width // group
    maxima = scores.reshape(rows, groups, group).max(axis=2)
    best = np.argpartition(maxima, groups - top, axis=1)[:, groups - top :]
    columns = (best[:, :, None] * group + np.arange(group)).reshape(rows, top * group)
    inside = np.argpartition(np.take_along_axis(scores, columns, axis=1), top * group - top, axis=1)
    return np.take_along_axis(columns, inside[:, top * group - top :], axis=1)


def _sparse_softmax(
    product: np.ndarray, kept: np.ndarray, scale: float, classes: int, work: np.ndarray | None = None
) -> sparse.csr_matrix:
    """Softmax of scale * `product` along each row, of which the row keeps the columns `kept` (not
    renormalised: P stays P). Columns past `classes`, at -inf, pad them to whole column groups.
    `work`: an array of product's shape to write the logits in (a fresh 80 MB a block costs as
    much as the exponentials)."""
    values = np.take_along_axis(product, kept, axis=1)
    largest = values.max(axis=1, keepdims=True)
    logits = np.subtract(product, largest, out=work)
    logits *= np.float32(scale)
    total = np.exp(logits, out=logits).sum(axis=1, keepdims=True)
    values = (np.exp(np.float32(scale) * (values - largest)) / total).astype(np.float32)
    return _sparse_rows(values, kept, classes)


def _sparse_rows(values: np.ndarray, kept: np.ndarray, classes: int) -> sparse.csr_matrix:
    """Rows over `classes` columns holding `values` at the columns `kept`, row by row."""
    rows = np.repeat(np.arange(len(values)), kept.shape[1])
    return sparse.csr_matrix((values.ravel(), (rows, kept.ravel())), shape=(len(values), classes))


def sparse_posteriors_on(
    device, vectors: np.ndarray, columns: np.ndarray, scales: Sequence[float], described: str, progress: bool
) -> dict:
    """`_sparse_posteriors` with the product, each photo's top classes and the softmax's sums made
    by torch on `device` (a GPU: seconds, where 2 CPU cores take twenty minutes for a 760k gallery
    over 81k landmarks); only each photo's top classes and their posteriors come back."""
    import torch

    classes, top = len(columns), min(TOP_CLASSES, len(columns))
    blocks: dict[float, list] = {scale: [] for scale in scales}
    with torch.no_grad():
        prototypes = torch.from_numpy(np.ascontiguousarray(columns, np.float32)).to(device)
        for start in steps(range(0, len(vectors), DEVICE_ROWS_AT_ONCE), described, unit="block", enabled=progress):
            block = torch.from_numpy(l2_normalize(vectors[start : start + DEVICE_ROWS_AT_ONCE])).to(device)
            product = block @ prototypes.T
            values, kept = product.topk(top, dim=1)
            kept = kept.cpu().numpy()
            for scale in scales:
                scaled = torch.logsumexp(product * scale, dim=1, keepdim=True)
                posteriors = torch.exp(values * scale - scaled).cpu().numpy()
                blocks[scale].append(_sparse_rows(posteriors, kept, classes))
        del prototypes, block, product, values, scaled
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the search allocates on the GPU next
    return {scale: sparse.vstack(parts, format="csr") for scale, parts in blocks.items()}


@dataclass
class LabelClassifier:
    """Linear softmax over the training landmarks, plus how much its posteriors count."""

    classes: list[str]
    coef: np.ndarray  # (classes, dim)
    intercept: np.ndarray  # (classes,)
    weight: float = 0.0  # of P(q).P(g) in the fused score
    strength: float = 10.0  # logistic regression's C (inverse regularisation); the prototypes' cosine scale
    # Max-posterior threshold that tells a training landmark's photo from another's, with its true and
    # false positive rates on held-out landmarks: what `--landmarks auto` estimates the query mix from.
    calibration: dict = field(default_factory=dict)
    # each landmark's mean training embedding (L2-normalised), in `classes` order: a sign of a known landmark
    prototypes: np.ndarray | None = None
    gate: KnownGate | None = None  # P(known | photo), fitted on held-out photos; None: no mixed folds
    gated_weight: float = 0.0  # the fusion weight on a mixed set, scaled per pair by the gate

    @property
    def sparse(self) -> bool:
        return len(self.classes) > LOGISTIC_MOST_CLASSES

    @property
    def kind(self) -> str:
        """What the summary says it is."""
        if self.sparse:
            return f"class prototypes, top {TOP_CLASSES} posteriors kept ({len(self.classes)} landmarks)"
        return f"logistic regression ({len(self.classes)} landmarks)"

    def posteriors(self, vectors: np.ndarray, progress: bool = False, device=None):
        """P(class | photo): an (n, classes) array, or sparse rows of each photo's TOP_CLASSES.
        `progress`: report it (a gallery of 760k photos over 81k landmarks takes twenty minutes on 2 cores);
        `device`: a CUDA device makes the sparse ones there (torch), any other leaves them to numpy."""
        if not self.sparse:  # each block made unit as it is scored: a 760k gallery's copy would be 4 GB
            blocks = [
                _softmax(l2_normalize(vectors[rows]) @ self.coef.T + self.intercept)
                for rows in _row_blocks(len(vectors))
            ]
            return np.concatenate(blocks) if blocks else np.zeros((0, len(self.classes)), np.float32)
        return self._sparse_posteriors(vectors, self.coef, (1.0,), progress, device)[1.0]

    def posteriors_at(self, vectors: np.ndarray, strengths: Sequence[float], device=None) -> dict:
        """Sparse posteriors of the prototype classifier at each of `strengths` (its logits are the
        strength times each photo's cosine to the prototypes): one product of the photos with the
        prototypes serves them all, the cost of validation's grid over strengths at 81k landmarks."""
        return self._sparse_posteriors(vectors, self.prototypes, strengths, device=device)

    def _sparse_posteriors(
        self, vectors: np.ndarray, columns: np.ndarray, scales: Sequence[float], progress: bool = False, device=None
    ) -> dict:
        """Top-TOP_CLASSES posteriors of softmax(scale * unit(vectors) @ columns.T) per scale. A sparse
        classifier has no intercept (its logits are scaled cosines), so a photo's top classes are
        the same at every scale: found once, then only the softmax's sum is made per scale."""
        classes = len(self.classes)
        if not len(vectors):
            return {scale: sparse.csr_matrix((0, classes), dtype=np.float32) for scale in scales}
        described = f"class posteriors of {len(vectors):,} photos over {classes:,} landmarks"
        if getattr(device, "type", None) == "cuda":
            return sparse_posteriors_on(device, vectors, columns, scales, described, progress)
        # padded to whole column groups (at -inf: no probability) so a block's groups are a free reshape
        padding = -classes % COLUMN_GROUP
        padded = np.concatenate([columns, np.zeros((padding, columns.shape[1]), np.float32)]).T
        # each block kept sparse as it is made: 1.58M dense rows over 81k classes would be 0.5 TB
        blocks: dict[float, list] = {scale: [] for scale in scales}
        work = np.empty((min(ROWS_AT_ONCE, len(vectors)), padded.shape[1]), np.float32)
        for rows in steps(list(_row_blocks(len(vectors))), described, unit="block", enabled=progress):
            product = l2_normalize(vectors[rows]) @ padded
            product[:, classes:] = -np.inf
            kept = top_columns(product, min(TOP_CLASSES, classes))
            for scale in scales:
                blocks[scale].append(_sparse_softmax(product, kept, scale, classes, work[: len(product)]))
        return {scale: sparse.vstack(parts, format="csr") for scale, parts in blocks.items()}

    def gate_features(self, vectors: np.ndarray, posteriors=None) -> np.ndarray:
        """(top posterior, cosine to the nearest class prototype) of each photo: what the gate reads."""
        posteriors = self.posteriors(vectors) if posteriors is None else posteriors
        # a block of photos at a time: a 760k gallery's unit rows and nearest prototypes would be 4 GB each
        if self.sparse:  # the classes are the prototypes: the top posterior's is the nearest, no second pass
            top = np.asarray(posteriors.argmax(axis=1)).ravel()
            nearest = [
                np.einsum("nd,nd->n", l2_normalize(vectors[rows]), self.prototypes[top[rows]])
                for rows in _row_blocks(len(vectors))
            ]
        else:
            nearest = [
                (l2_normalize(vectors[rows]) @ self.prototypes.T).max(axis=1) for rows in _row_blocks(len(vectors))
            ]
        nearest = np.concatenate(nearest) if nearest else np.zeros(0, np.float32)
        return np.stack([top_posterior(posteriors), nearest], axis=1).astype(np.float32)

    def known_probability(self, vectors: np.ndarray, posteriors: np.ndarray | None = None) -> np.ndarray:
        return self.gate.probability(self.gate_features(vectors, posteriors))

    def to_payload(self) -> dict:
        """Tensors, plain containers and numbers: what a checkpoint loaded with weights_only may hold."""
        import torch

        return {
            "classes": list(self.classes),
            "coef": torch.from_numpy(np.ascontiguousarray(self.coef, np.float32)),
            "intercept": torch.from_numpy(np.ascontiguousarray(self.intercept, np.float32)),
            "weight": float(self.weight),
            "strength": float(self.strength),
            "calibration": dict(self.calibration),
            "prototypes": None if self.prototypes is None else torch.from_numpy(self.prototypes.astype(np.float32)),
            "gate": None if self.gate is None else self.gate.to_payload(),
            "gated_weight": float(self.gated_weight),
        }

    @classmethod
    def from_payload(cls, payload: dict) -> "LabelClassifier":
        return cls(
            list(payload["classes"]),
            np.asarray(payload["coef"], dtype=np.float32),  # a CPU tensor or a list
            np.asarray(payload["intercept"], dtype=np.float32),
            float(payload.get("weight", 0.0)),
            float(payload.get("strength", 10.0)),
            dict(payload.get("calibration") or {}),
            # runs trained before the gate: no prototypes, no gate, so no fusion on mixed sets
            None if payload.get("prototypes") is None else np.asarray(payload["prototypes"], dtype=np.float32),
            KnownGate.from_payload(payload.get("gate")),
            float(payload.get("gated_weight", 0.0)),
        )


def fit_label_classifier(vectors: np.ndarray | Rows, labels, strength: float = 10.0) -> LabelClassifier:
    """Logistic regression up to LOGISTIC_MOST_CLASSES landmarks, class prototypes above (read a
    block of rows at a time: Google Landmarks' 1.58M embeddings are never held at once)."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, dtype=object).astype(str)
    unit = as_rows(vectors).normalized()
    classes = sorted(set(labels.tolist()))
    if len(classes) > LOGISTIC_MOST_CLASSES:
        prototypes = class_prototypes(unit, labels, classes)
        bias = np.zeros(len(classes), np.float32)
        return LabelClassifier(classes, strength * prototypes, bias, strength=strength, prototypes=prototypes)
    vectors = unit.whole()
    model = LogisticRegression(C=strength, max_iter=5000).fit(vectors, labels)
    classes = [str(c) for c in model.classes_]
    coef, intercept = model.coef_, model.intercept_
    if len(classes) == 2:  # scikit-learn keeps one logit z for two classes: softmax(-z/2, z/2) = sigmoid(z)
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    prototypes = class_prototypes(vectors, labels, classes)
    return LabelClassifier(classes, coef, intercept, strength=strength, prototypes=prototypes)


def class_prototypes(vectors: np.ndarray | Rows, labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Each class's mean unit embedding, unit length, in `classes` order (one pass, any class count)."""
    index = {c: i for i, c in enumerate(classes)}
    owners = np.array([index[label] for label in labels], dtype=np.int64)
    return l2_normalize(class_sums(vectors, owners, len(classes)).astype(np.float32))


def weighted_posteriors(posteriors, weight: float, gate: np.ndarray | None = None):
    """Rows whose inner product is the fusion term weight * gate(a) * gate(b) * P(a).P(b)."""
    scale = np.sqrt(np.float32(weight)) * (np.ones(posteriors.shape[0], np.float32) if gate is None else gate)
    if sparse.issparse(posteriors):
        return sparse.csr_matrix(sparse.diags(scale.astype(np.float32)) @ posteriors, dtype=np.float32)
    return (posteriors * scale[:, None]).astype(np.float32)


def posterior_agreement(query_rows, gallery_rows, candidates: np.ndarray) -> np.ndarray:
    """query_rows[i] . gallery_rows[candidates[i, j]] for each query and candidate, in blocks of ~64 MB.
    Sparse rows multiply sparse: only gallery photos sharing a kept class with a query are touched."""
    agreement = np.empty(candidates.shape, np.float32)
    if sparse.issparse(query_rows):
        gallery_t = sparse.csc_matrix(gallery_rows.T)
        for rows in _row_blocks(query_rows.shape[0]):
            agreement[rows] = _picked((query_rows[rows] @ gallery_t).tocsr(), candidates[rows])
        return agreement
    block = max(1, (1 << 24) // max(1, candidates.shape[1] * gallery_rows.shape[1]))
    for start in range(0, len(query_rows), block):
        rows = slice(start, start + block)
        agreement[rows] = np.einsum("qc,qkc->qk", query_rows[rows], gallery_rows[candidates[rows]])
    return agreement


def _picked(shared: sparse.csr_matrix, columns: np.ndarray) -> np.ndarray:
    """shared[i, columns[i, j]] for each i, j, zero where not stored: one binary search over the
    entries' (row, column) keys, where scipy's indexing scans a long row once per pick."""
    shared.sum_duplicates()  # sorted, unique columns in each row: the keys ascend
    width = shared.shape[1]
    keys = np.repeat(np.arange(shared.shape[0], dtype=np.int64), np.diff(shared.indptr)) * width + shared.indices
    wanted = (np.arange(len(columns), dtype=np.int64)[:, None] * width + columns).ravel()
    if not len(keys):
        return np.zeros(columns.shape, np.float32)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, shared.data[at], 0).reshape(columns.shape)


def rescore(scores: np.ndarray, candidates: np.ndarray, bonus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's candidates re-ordered by score + bonus (ties keep their order): the top k."""
    fused = scores + bonus
    order = best_first(fused, k)
    return np.take_along_axis(fused, order, axis=1), np.take_along_axis(candidates, order, axis=1)
