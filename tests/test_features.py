"""Features computed elsewhere (`compete features`): train and submit on them without the photos,
with the results the photos give, and clear refusals where photos are needed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config, tiny_submit_config

from competition.augment.generate import augment_competition
from competition.augment.recipes import load_recipe
from competition.data.discover import discover_competition
from competition.errors import CompeteError
from competition.models.embedder import Embedder
from competition.settings.features import FeaturesConfig
from competition.submit.features import export_features
from competition.submit.run import submit
from competition.train.loop import train

VIEW = dict(image_size=32)


def _export(data: Path, tmp_path: Path, **settings) -> Path:
    config = FeaturesConfig(data=str(data), out=str(tmp_path / "features"), runs_dir=str(tmp_path / "runs"))
    return export_features(config.model_copy(update=VIEW | settings), progress=False).parent


def _last_layer(data, tmp_path, name):
    config = tiny_config(data, tmp_path / "runs", name, pretrained=True, **VIEW)
    return train(config, progress=False)


def test_train_and_submit_on_features_equal_the_photos_and_open_none(tiny_competition, tmp_path, monkeypatch):
    features = _export(tiny_competition, tmp_path)
    on_photos = _last_layer(tiny_competition, tmp_path, "photos")
    by_photos = submit(
        tiny_submit_config(tiny_competition, tmp_path, [str(tmp_path / "runs/photos")], name="p", **VIEW),
        progress=False,
    )

    shutil.rmtree(tiny_competition)  # the photos are gone: only the features folder is left
    monkeypatch.setattr(Embedder, "pooled", lambda *_: pytest.fail("a photo was embedded"))
    on_features = _last_layer(features, tmp_path, "features")
    by_features = submit(
        tiny_submit_config(features, tmp_path, [str(tmp_path / "runs/features")], name="f", **VIEW), progress=False
    )

    assert on_features["validation"] == on_photos["validation"]
    assert by_features.scores == by_photos.scores and by_features.scores["top1"] > 0
    assert by_features.path.read_text() == by_photos.path.read_text()  # the same ids, the same rankings


def test_features_folder_layout_ids_labels_and_float16(tiny_competition, tmp_path):
    features = _export(tiny_competition, tmp_path)
    meta = json.loads((features / "features.json").read_text())
    assert set(meta["splits"]) == {"train", "query", "gallery"}
    assert meta["splits"]["query"]["features"].endswith("-flip.store")  # submit's view; train's has one view
    assert not meta["splits"]["train"]["features"].endswith("-flip.store")
    photos, rows = discover_competition(tiny_competition), discover_competition(features)
    assert rows.layout == "features"
    for split in ("train", "query", "gallery"):
        assert [(r.name, r.label) for r in getattr(rows, split)] == [(r.name, r.label) for r in getattr(photos, split)]
        assert np.load(features / f"{split}.npy").dtype == np.float16
    # float16 ranks as the photos do on this set
    run = ["efficientnet_lite0"]
    by_photos = submit(tiny_submit_config(tiny_competition, tmp_path, run, name="p", **VIEW), progress=False)
    by_features = submit(tiny_submit_config(features, tmp_path, run, name="f", **VIEW), progress=False)
    assert by_features.scores == by_photos.scores


def test_what_needs_photos_is_refused_by_name(tiny_competition, tmp_path):
    features = _export(tiny_competition, tmp_path)
    with pytest.raises(CompeteError, match="full regime"):
        train(tiny_config(features, tmp_path / "runs", "full", regime="full"), progress=False)
    with pytest.raises(CompeteError, match="nothing to augment"):
        augment_competition(features, load_recipe("light", target_per_class=8), progress=False)
    with pytest.raises(CompeteError, match="--verify"):
        submit(tiny_submit_config(features, tmp_path, ["efficientnet_lite0"], verify=5, **VIEW), progress=False)
    # another view than the rows were written at: refused, naming both, never ranked on the wrong features
    with pytest.raises(
        CompeteError, match=r"query\.npy: features of .*-32-aspect-flip\.store, not of this model \(.*-64-aspect-flip"
    ):
        submit(tiny_submit_config(features, tmp_path, ["efficientnet_lite0"], image_size=64), progress=False)
    # a run that fine-tuned its backbone embeds differently from the rows
    train(tiny_config(tiny_competition, tmp_path / "runs", "full", regime="full", epochs=1), progress=False)
    with pytest.raises(CompeteError, match=r"not of this model \(full-.*fine-tuned its backbone"):
        submit(tiny_submit_config(features, tmp_path, [str(tmp_path / "runs/full")], **VIEW), progress=False)


def test_a_damaged_features_folder_is_named(tiny_competition, tmp_path):
    features = _export(tiny_competition, tmp_path)
    table = pd.read_csv(features / "train.csv", dtype=str, keep_default_na=False)
    table.iloc[:-1].to_csv(features / "train.csv", index=False)
    with pytest.raises(CompeteError, match=r"train\.npy: .* rows for the \d+ ids"):
        discover_competition(features)
    table.assign(landmark="").to_csv(features / "train.csv", index=False)
    with pytest.raises(CompeteError, match="every training row needs its landmark"):
        discover_competition(features)
    (features / "features.json").write_text("{}")
    with pytest.raises(CompeteError, match="not a features description"):
        discover_competition(features)
