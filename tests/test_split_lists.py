"""The ImageNet-LT split-list parser: synthetic lists, malformed lines, the real val/test lists.

Lists in the real ImageNet-LT format and size are built in the tests; the real lists are
checked too when ``../shared/data/lt_splits`` is next to this checkout (a user's clone has
no such folder).
"""

import os

import numpy as np
import pytest

from ltr_jax.data.datasets import split_lists

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = os.path.join(os.path.dirname(ROOT), "shared", "data", "lt_splits")


def _write(tmp_path, lines, name="list.txt"):
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def test_reads_a_synthetic_list(tmp_path):
    lines = [f"train/n0{c}/n0{c}_{i}.JPEG {c}" for c in range(3) for i in range(3 - c)]
    path = _write(tmp_path, [*lines, ""])  # a trailing blank line is allowed
    paths, labels = split_lists.read_split_list(path, num_classes=3)
    assert paths == [line.split()[0] for line in lines]
    assert labels.dtype == np.int32 and labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert split_lists.class_counts(labels).tolist() == [3, 2, 1]
    assert split_lists.class_counts(labels, 5).tolist() == [3, 2, 1, 0, 0]
    assert split_lists.synset_labels(paths, labels) == {"n00": 0, "n01": 1, "n02": 2}


@pytest.mark.parametrize(
    "bad, message",
    [
        ("train/n01/a.JPEG", r"list\.txt:2: expected '<relative image path> <integer label>'"),
        ("train/n01/a.JPEG 1 extra", r"list\.txt:2: expected"),
        ("train/n01/a.JPEG one", r"list\.txt:2: label 'one' is not a non-negative integer"),
        ("train/n01/a.JPEG -1", r"list\.txt:2: label '-1'"),
        ("/abs/n01/a.JPEG 1", r"list\.txt:2: path '/abs/n01/a.JPEG' must be relative"),
        ("train/../a.JPEG 1", r"list\.txt:2: path .* must be relative"),
        ("train/n01/a.JPEG 7", r"list\.txt:2: label 7 is not below num_classes=3"),
        ("train/n00/a.JPEG 0", r"list\.txt:2: train/n00/a\.JPEG is already listed at line 1"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path, ["train/n00/a.JPEG 0", bad])
    with pytest.raises(split_lists.SplitListError, match=message):
        split_lists.read_split_list(path, num_classes=3)


def test_empty_list_and_inconsistent_synsets_fail(tmp_path):
    with pytest.raises(split_lists.SplitListError, match="no images listed"):
        split_lists.read_split_list(_write(tmp_path, ["", "  "]))
    with pytest.raises(split_lists.SplitListError, match="folder 'n00' has labels 0 and 1"):
        split_lists.synset_labels(["t/n00/a.JPEG", "t/n00/b.JPEG"], np.array([0, 1]))
    with pytest.raises(split_lists.SplitListError, match="label 0 is in folders 'n00' and 'n01'"):
        split_lists.synset_labels(["t/n00/a.JPEG", "t/n01/b.JPEG"], np.array([0, 0]))


def _imagenet_lt_list(tmp_path, split: str, per_class: int) -> str:
    """A list in the real ImageNet-LT format and size (1,000 WordNet-style ids, labels by the
    sorted id, ``per_class`` lines a class, grouped by class as released) written to tmp_path:
    val names train images (``train/<wnid>/<wnid>_<n>.JPEG``), test the official validation
    images (``val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG``)."""
    rng = np.random.default_rng(0)
    wnids = sorted({f"n{i:08d}" for i in rng.choice(10**8, 1000, replace=False)})
    numbers = iter(rng.permutation(50_000) + 1)  # the validation images' numbers
    lines = []
    for label, wnid in enumerate(wnids):
        for k in rng.choice(10**4, per_class, replace=False):
            name = f"train/{wnid}/{wnid}_{k}" if split == "val" else f"val/{wnid}/ILSVRC2012_val_"
            lines.append(
                f"{name}{next(numbers):08d}.JPEG {label}"
                if split == "test"
                else f"{name}.JPEG {label}"
            )
    return _write(tmp_path, lines, f"ImageNet_LT_{split}.txt")


# The real lists (``../shared/data/lt_splits``) ship only beside the development checkout and
# are data that is never committed: CI reads lists built in their format and size instead, and
# a checkout that has the real lists checks them too.
@pytest.mark.parametrize("split, per_class, folder", [("val", 20, "train/"), ("test", 50, "val/")])
def test_imagenet_lt_lists(tmp_path, split, per_class, folder):
    real = os.path.join(SPLITS, f"ImageNet_LT_{split}.txt")
    built = _imagenet_lt_list(tmp_path, split, per_class)
    for path in [built] + ([real] if os.path.exists(real) else []):
        paths, labels = split_lists.read_split_list(path, num_classes=split_lists.NUM_CLASSES)
        assert len(paths) == split_lists.IMAGENET_LT_SIZES[split], path
        counts = split_lists.class_counts(labels, split_lists.NUM_CLASSES)
        assert (counts == per_class).all()
        assert all(p.startswith(folder) and p.endswith(".JPEG") for p in paths)
        synsets = split_lists.synset_labels(paths, labels)
        assert len(synsets) == 1000
        # Labels follow the sorted WordNet ids, as in torchvision's ImageFolder and TFDS.
        assert [synsets[s] for s in sorted(synsets)] == list(range(1000))
