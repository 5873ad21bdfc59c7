import io

import numpy as np
import pytest
from PIL import Image

from competition.data.discover import discover_competition, discover_train
from competition.data.images import UnreadableImage, read_image
from competition.data.sample import SampleConfig, make_sample_competition
from competition.errors import CompeteError


def _save(path, image: Image.Image, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _photo(w=40, h=30, colour=(200, 30, 30)):
    return Image.new("RGB", (w, h), colour)


def test_discovery_sorted_case_insensitive_and_ignores_junk(tmp_path):
    _save(tmp_path / "train" / "b" / "2.JPG", _photo())
    _save(tmp_path / "train" / "b" / "1.png", _photo())
    _save(tmp_path / "train" / "a" / "x.jpeg", _photo())
    (tmp_path / "train" / "a" / "notes.txt").write_text("not a photo")
    (tmp_path / "train" / "a" / ".hidden.jpg").write_bytes(b"")
    _save(tmp_path / "train" / "__MACOSX" / "junk.jpg", _photo())
    records = discover_train(tmp_path / "train")
    assert [(r.label, r.name) for r in records] == [("a", "a/x.jpeg"), ("b", "b/1.png"), ("b", "b/2.JPG")]


def test_empty_class_is_an_error_naming_it(tmp_path):
    _save(tmp_path / "train" / "full" / "1.jpg", _photo())
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(CompeteError, match="empty"):
        discover_train(tmp_path / "train")


def test_missing_folder_and_query_without_gallery(tmp_path):
    with pytest.raises(CompeteError, match="not found"):
        discover_competition(tmp_path / "nope")
    _save(tmp_path / "train" / "a" / "1.jpg", _photo())
    _save(tmp_path / "query" / "q.jpg", _photo())
    with pytest.raises(CompeteError, match="no gallery"):
        discover_competition(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("picture,label\nquery/q.jpg,a\n", "missing column"),
        ("image,class\nquery/q.jpg,a\nquery/q.jpg,b\n", "twice"),
        ("image,class\n../secret.jpg,a\n", "escapes"),
        ("image,class\nquery/unknown.jpg,a\n", "not found on disk"),
    ],
)
def test_bad_labels_csv(tmp_path, content, message):
    _save(tmp_path / "train" / "a" / "1.jpg", _photo())
    _save(tmp_path / "query" / "q.jpg", _photo())
    _save(tmp_path / "gallery" / "g.jpg", _photo())
    (tmp_path / "labels.csv").write_text(content)
    with pytest.raises(CompeteError, match=message):
        discover_competition(tmp_path)


def test_sample_set_is_deterministic_with_unseen_classes(tmp_path):
    config = SampleConfig(
        seen_classes=3, unseen_classes=2, train_per_class=2, query_per_class=1, gallery_per_class=2, size=48, seed=5
    )
    a = make_sample_competition(tmp_path / "a", config, progress=False)
    b = make_sample_competition(tmp_path / "b", config, progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    competition = discover_competition(a)
    assert len(competition.train_classes) == 3 and len(competition.train) == 6
    assert len(competition.query) == 5 and len(competition.gallery) == 10
    eval_classes = {r.label for r in competition.query}
    assert len(eval_classes - set(competition.train_classes)) == 2  # unseen landmarks present
    assert competition.has_eval_labels


def test_read_image_modes(tmp_path):
    rgba = Image.new("RGBA", (10, 8), (255, 0, 0, 0))  # fully transparent -> white
    assert read_image(_save(tmp_path / "rgba.png", rgba))[0, 0].tolist() == [255, 255, 255]
    gray = Image.new("L", (10, 8), 77)
    assert read_image(_save(tmp_path / "gray.png", gray)).shape == (8, 10, 3)
    palette = _photo().convert("P")
    assert read_image(_save(tmp_path / "palette.png", palette)).shape == (30, 40, 3)
    deep = Image.fromarray(np.full((8, 10), 4000, dtype=np.uint16))
    assert read_image(_save(tmp_path / "deep.png", deep)).max() == 255
    cmyk = _photo().convert("CMYK")
    assert read_image(_save(tmp_path / "cmyk.jpg", cmyk)).shape == (30, 40, 3)


def test_read_image_respects_exif_orientation(tmp_path):
    image = _photo(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    path = _save(tmp_path / "rotated.jpg", image, exif=exif.tobytes())
    assert read_image(path).shape == (40, 20, 3)


def test_read_image_bounds_huge_images(tmp_path):
    path = _save(tmp_path / "huge.jpg", _photo(6000, 4500))
    assert max(read_image(path, max_side=1024).shape[:2]) == 1024


@pytest.mark.parametrize("content", [b"", b"this is text, not a JPEG", b"\xff\xd8\xff\xe0" + b"\x00" * 50])
def test_unreadable_images_name_the_file(tmp_path, content):
    path = tmp_path / "bad photo.jpg"
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match="bad photo.jpg"):
        read_image(path)


def test_truncated_jpeg_is_reported(tmp_path):
    buffer = io.BytesIO()
    _photo(200, 200).save(buffer, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(UnreadableImage, match="cut.jpg"):
        read_image(path)
