"""Tests of data/datasets/image_lists.py on tiny downloads written here in the official layouts.

ImageNet-2012: a tar of per-class tars plus a flat validation tar, or the extracted folders;
iNaturalist 2018: ``train_val2018.tar.gz`` or its folder. Images are small PIL files of several
sizes and modes (a grayscale and a CMYK JPEG, and a PNG named .JPEG as in real ImageNet). No
network, no real data; every folder lives in tmp_path.
"""

import hashlib
import io
import logging
import re
import sys
import tarfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from ltr_jax.data.datasets import image_lists, split_lists
from ltr_jax.data.datasets.records import DatasetNotFoundError, UnverifiedArchiveError

WNIDS = ("n01000003", "n01000017", "n01000042", "n01000099")  # labels 0..3
TRAIN_PER_CLASS = 5  # images per class in the training archive
LT_TRAIN = (3, 2, 1, 1)  # per class in the train list; one more per class in the val list
VAL_IMAGES = 10  # ILSVRC2012_val_00000001..10; 8 listed in the test list
INAT_CLASSES = (("Plantae", 0), ("Plantae", 1), ("Aves", 2), ("Insecta", 3), ("Aves", 4))


@pytest.fixture(autouse=True)
def small_builders(monkeypatch):
    """Few classes, progress logged often, and a tiny memory budget so reordering spills."""
    monkeypatch.setattr(image_lists.LtrImagenetLt, "NUM_CLASSES", len(WNIDS))
    monkeypatch.setattr(image_lists.LtrInaturalist2018, "NUM_CLASSES", len(INAT_CLASSES))
    for builder in (image_lists.LtrImagenetLt, image_lists.LtrInaturalist2018):
        monkeypatch.setattr(builder, "LOG_EVERY", 4)
        monkeypatch.setattr(builder, "REORDER_MEMORY_BYTES", 3000)
        monkeypatch.setattr(builder, "EXAMPLES_PER_SHARD", 3)


def _encode(rng, size, mode="RGB", fmt="JPEG") -> bytes:
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, fmt)
    return out.getvalue()


def _imagenet(seed=0) -> dict:
    """{"images": bytes by listed path, "lists": split -> [(listed path, label)]}."""
    rng = np.random.default_rng(seed)
    train = {}  # listed path -> bytes
    for c, wnid in enumerate(WNIDS):
        for k in range(TRAIN_PER_CLASS):
            train[f"train/{wnid}/{wnid}_{100 + 7 * k}.JPEG"] = _encode(rng, (9 + c + k, 7 + 2 * k))
    train[f"train/{WNIDS[1]}/{WNIDS[1]}_100.JPEG"] = _encode(rng, (12, 10), mode="L")
    train[f"train/{WNIDS[2]}/{WNIDS[2]}_100.JPEG"] = _encode(rng, (11, 9), fmt="PNG")
    val_labels = [c % len(WNIDS) for c in range(VAL_IMAGES)]
    val = {}  # listed path (with the class folder) -> bytes
    for n, c in enumerate(val_labels, start=1):
        mode = "CMYK" if n == 3 else "RGB"
        val[f"val/{WNIDS[c]}/ILSVRC2012_val_{n:08d}.JPEG"] = _encode(rng, (8 + n, 10), mode)
    lists = {"train": [], "val": [], "test": []}
    for c, wnid in enumerate(WNIDS):
        mine = [p for p in train if f"/{wnid}/" in p]
        # List order differs from archive order; image 0 (grayscale or PNG) is always listed.
        order = [0, *rng.permutation(np.arange(1, len(mine)))]
        lists["train"] += [(mine[i], c) for i in order[: LT_TRAIN[c]]]
        lists["val"].append((mine[order[LT_TRAIN[c]]], c))
        tests = [p for p in val if f"/{wnid}/" in p][:2]
        lists["test"] += [(tests[1], c), (tests[0], c)]
    return {"images": {**train, **val}, "lists": lists}


def _tar_bytes(files: dict, mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _write_imagenet_tars(folder, images: dict) -> None:
    """ILSVRC2012_img_train.tar (per-class tars, classes in reverse order) and a flat
    ILSVRC2012_img_val.tar, both uncompressed like the official ones."""
    folder.mkdir(parents=True, exist_ok=True)
    inner = {}
    for wnid in reversed(WNIDS):
        files = {p.rsplit("/", 1)[1]: b for p, b in images.items() if p.startswith(f"train/{wnid}")}
        inner[f"{wnid}.tar"] = _tar_bytes(dict(sorted(files.items())))
    (folder / "ILSVRC2012_img_train.tar").write_bytes(_tar_bytes(inner))
    flat = {p.rsplit("/", 1)[1]: b for p, b in images.items() if p.startswith("val/")}
    (folder / "ILSVRC2012_img_val.tar").write_bytes(_tar_bytes(dict(sorted(flat.items()))))


def _write_folders(folder, images: dict, flat_val: bool = False) -> None:
    for listed, data in images.items():
        if flat_val and listed.startswith("val/"):
            listed = "val/" + listed.rsplit("/", 1)[1]
        (folder / listed).parent.mkdir(parents=True, exist_ok=True)
        (folder / listed).write_bytes(data)


def _write_lists(folder, lists: dict, names: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, entries in lists.items():
        (folder / names[split]).write_text("".join(f"{p} {c}\n" for p, c in entries))


def _config(tmp_path, **overrides) -> ml_collections.FrozenConfigDict:
    config = {
        "name": "imagenet_lt",
        "data_dir": str(tmp_path / "tfds"),
        "manual_dir": str(tmp_path / "manual"),
        "split_dir": str(tmp_path / "lists"),
        "allow_unverified_archive": True,
        "test_split": "test",
    }
    config.update(overrides)
    return ml_collections.FrozenConfigDict(config)


@pytest.fixture
def imagenet(tmp_path) -> dict:
    """Official tars in tmp_path/manual, lists in tmp_path/lists."""
    data = _imagenet()
    _write_imagenet_tars(tmp_path / "manual", data["images"])
    _write_lists(tmp_path / "lists", data["lists"], image_lists.LtrImagenetLt.LISTS)
    return data


def _assert_split(split: image_lists.ImageSplit, entries: list, images: dict) -> None:
    """Record i is list line i: the original bytes, its label, its index."""
    assert len(split.source) == len(entries)
    np.testing.assert_array_equal(split.labels, [c for _, c in entries])
    assert split.labels.dtype == np.int32
    for i, (listed, label) in enumerate(entries):
        record = split.source[i]
        assert isinstance(record["image"], bytes)
        assert record["image"] == images[listed], listed
        assert int(record["label"]) == label and int(record["index"]) == i
        Image.open(io.BytesIO(record["image"])).load()


def _records(source) -> list:
    return [
        (r["image"], int(r["label"]), int(r["index"]))
        for r in map(source.__getitem__, range(len(source)))
    ]


def _builder(tmp_path, cls=image_lists.LtrImagenetLt, data_dir="tfds"):
    return cls(data_dir=str(tmp_path / data_dir))


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# ImageNet-LT.


def test_imagenet_lt_from_official_tars(tmp_path, imagenet, caplog):
    with caplog.at_level(logging.INFO):
        ds = image_lists.load_image_list_dataset(_config(tmp_path))
    _assert_split(ds.train, imagenet["lists"]["train"], imagenet["images"])
    _assert_split(ds.test, imagenet["lists"]["test"], imagenet["images"])
    modes = {Image.open(io.BytesIO(ds.train.source[i]["image"])).mode for i in range(7)}
    formats = {Image.open(io.BytesIO(ds.train.source[i]["image"])).format for i in range(7)}
    assert "L" in modes and formats == {"JPEG", "PNG"}
    assert "CMYK" in {Image.open(io.BytesIO(ds.test.source[i]["image"])).mode for i in range(8)}
    assert ds.num_classes == 4 and ds.class_names == WNIDS and ds.verified is False
    val = image_lists.load_image_list_dataset(_config(tmp_path, test_split="val"))
    _assert_split(val.test, imagenet["lists"]["val"], imagenet["images"])
    assert "tensorflow" not in sys.modules
    metadata = _builder(tmp_path).info.metadata
    assert metadata["image_sources"] == {
        "train": "archive ILSVRC2012_img_train.tar",
        "val": "archive ILSVRC2012_img_val.tar",
    }
    assert metadata["lists"]["test"]["sha256"] == _sha256(tmp_path / "lists/ImageNet_LT_test.txt")
    assert (
        metadata["lists"]["test"]["published_sha256"] == image_lists.IMAGENET_LT_LIST_SHA256["test"]
    )
    messages = [r.getMessage() for r in caplog.records]
    assert any("ltr_imagenet_lt train: 4/7 images written (" in m for m in messages)
    assert any("Scanning ILSVRC2012_img_train.tar: 8 files (" in m for m in messages)
    # The last line of each archive: every listed image found, some went through the disk.
    final = [m for m in messages if "ILSVRC2012_img_train.tar: 19 files" in m]
    assert final and "found 11/11 listed" in final[-1]
    assert re.search(r"; [1-9][0-9]* images \(.*MB\) went through the temporary file", final[-1])
    assert _builder(tmp_path).info.splits["train"].shard_lengths == [3, 3, 1]


@pytest.mark.parametrize("flat_val", [False, True])
def test_extracted_folders_give_the_same_dataset(tmp_path, imagenet, flat_val):
    image_lists.load_image_list_dataset(_config(tmp_path))
    _write_folders(tmp_path / "extracted", imagenet["images"], flat_val=flat_val)
    config = _config(
        tmp_path, data_dir=str(tmp_path / "tfds2"), manual_dir=str(tmp_path / "extracted")
    )
    image_lists.load_image_list_dataset(config)
    from_tars, from_folders = _builder(tmp_path), _builder(tmp_path, data_dir="tfds2")
    for split in ("train", "val", "test"):
        assert _records(from_tars.as_data_source(split)) == _records(
            from_folders.as_data_source(split)
        )
    assert from_folders.info.metadata["labels"] == from_tars.info.metadata["labels"]
    assert from_folders.info.metadata["image_sources"] == {
        "train": "folder train/",
        "val": "folder val/",
    }


def test_lists_in_the_manual_folder_by_default(tmp_path, imagenet):
    _write_lists(tmp_path / "manual", imagenet["lists"], image_lists.LtrImagenetLt.LISTS)
    ds = image_lists.load_image_list_dataset(_config(tmp_path, split_dir=None))
    _assert_split(ds.train, imagenet["lists"]["train"], imagenet["images"])


def test_published_lists_are_verified(tmp_path, imagenet, monkeypatch):
    names = image_lists.LtrImagenetLt.LISTS
    digests = {split: _sha256(tmp_path / "lists" / name) for split, name in names.items()}
    monkeypatch.setattr(image_lists.LtrImagenetLt, "LIST_SHA256", digests)
    ds = image_lists.load_image_list_dataset(_config(tmp_path, allow_unverified_archive=False))
    assert ds.verified is True and _builder(tmp_path).info.metadata["verified"] is True


def test_unpublished_lists_are_refused_then_allowed_and_remembered(tmp_path, imagenet, caplog):
    with pytest.raises(UnverifiedArchiveError) as info:
        image_lists.load_image_list_dataset(_config(tmp_path, allow_unverified_archive=False))
    message = str(info.value)
    for needle in ("ImageNet_LT_train.txt", "allow_unverified_archive", "verified=False"):
        assert needle in message
    assert _sha256(tmp_path / "lists/ImageNet_LT_train.txt") in message
    assert image_lists.IMAGENET_LT_LIST_SHA256["train"] in message
    assert not _builder(tmp_path).is_prepared()
    assert image_lists.load_image_list_dataset(_config(tmp_path)).verified is False
    # Already prepared: the refusal must come from the recorded flag, not from the download.
    for archive in (tmp_path / "manual").iterdir():
        archive.unlink()
    with pytest.raises(UnverifiedArchiveError, match="UNVERIFIED lists"):
        image_lists.load_image_list_dataset(_config(tmp_path, allow_unverified_archive=False))
    with caplog.at_level(logging.WARNING):
        assert image_lists.load_image_list_dataset(_config(tmp_path)).verified is False
    assert any("UNVERIFIED" in r.getMessage() for r in caplog.records)


def test_an_image_in_two_lists_is_read_twice(tmp_path, imagenet):
    lists = dict(imagenet["lists"], val=imagenet["lists"]["train"][::3])
    _write_lists(tmp_path / "lists", lists, image_lists.LtrImagenetLt.LISTS)
    ds = image_lists.load_image_list_dataset(_config(tmp_path, test_split="val"))
    _assert_split(ds.test, lists["val"], imagenet["images"])
    _assert_split(ds.train, lists["train"], imagenet["images"])


def test_a_class_without_images_cannot_be_named(tmp_path, imagenet, monkeypatch):
    monkeypatch.setattr(image_lists.LtrImagenetLt, "NUM_CLASSES", len(WNIDS) + 1)
    with pytest.raises(split_lists.SplitListError, match="1 of the 5 labels have no image.*: 4"):
        image_lists.load_image_list_dataset(_config(tmp_path))


def test_missing_list_names_file_and_folder(tmp_path, imagenet):
    (tmp_path / "lists/ImageNet_LT_val.txt").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        image_lists.load_image_list_dataset(_config(tmp_path))
    message = str(info.value)
    for needle in ("ImageNet_LT_val.txt", str(tmp_path / "lists"), "split_dir", "OLTR"):
        assert needle in message
    assert image_lists.IMAGENET_LT_LIST_SHA256["val"] in message


def test_missing_download_names_archives_and_folders(tmp_path, imagenet):
    (tmp_path / "manual/ILSVRC2012_img_train.tar").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        image_lists.load_image_list_dataset(_config(tmp_path))
    message = str(info.value)
    for needle in ("ILSVRC2012_img_train.tar", "train/", str(tmp_path / "manual"), "manual_dir"):
        assert needle in message
    assert not _builder(tmp_path).is_prepared()


@pytest.mark.parametrize("form", ["archive", "folder"])
def test_missing_listed_images_are_named_and_counted(tmp_path, imagenet, form):
    absent = [(f"train/{WNIDS[0]}/{WNIDS[0]}_9{k}.JPEG", 0) for k in range(7)]
    lists = dict(imagenet["lists"], train=imagenet["lists"]["train"] + absent)
    _write_lists(tmp_path / "lists", lists, image_lists.LtrImagenetLt.LISTS)
    manual = tmp_path / "manual"
    if form == "folder":
        manual = tmp_path / "extracted"
        _write_folders(manual, imagenet["images"])
    with pytest.raises(image_lists.MissingImagesError) as info:
        image_lists.load_image_list_dataset(_config(tmp_path, manual_dir=str(manual)))
    message = str(info.value)
    assert "7 of the 18 listed images" in message and "and 2 more" in message
    assert f"{absent[0][0]} (ImageNet_LT_train.txt)" in message and absent[5][0] not in message
    assert ("ILSVRC2012_img_train.tar" if form == "archive" else str(manual / "train")) in message
    assert not _builder(tmp_path).is_prepared()


def test_other_lists_than_the_prepared_ones_are_refused(tmp_path, imagenet):
    image_lists.load_image_list_dataset(_config(tmp_path))
    lists = dict(imagenet["lists"], test=imagenet["lists"]["test"][::-1])
    _write_lists(tmp_path / "lists", lists, image_lists.LtrImagenetLt.LISTS)
    with pytest.raises(ValueError, match="ImageNet_LT_test.txt with sha256"):
        image_lists.load_image_list_dataset(_config(tmp_path))


def test_list_paths_outside_the_image_folders_are_rejected(tmp_path, imagenet):
    lists = dict(imagenet["lists"], val=[("images/n01000003/x.JPEG", 0)])
    _write_lists(tmp_path / "lists", lists, image_lists.LtrImagenetLt.LISTS)
    with pytest.raises(split_lists.SplitListError, match="ImageNet_LT_val.txt.*'images'"):
        image_lists.load_image_list_dataset(_config(tmp_path))


def test_unknown_name_and_test_split(tmp_path):
    with pytest.raises(ValueError, match="imagenet_lt.*inaturalist2018"):
        image_lists.load_image_list_dataset(_config(tmp_path, name="places_lt"))
    with pytest.raises(ValueError, match="test_split='train'"):
        image_lists.load_image_list_dataset(_config(tmp_path, test_split="train"))


# --------------------------------------------------------------------------------------------
# iNaturalist 2018.


def _inaturalist(seed=1) -> dict:
    rng = np.random.default_rng(seed)
    images, entries = {}, []
    for super_name, c in INAT_CLASSES:
        for k in range(5 - c // 2):
            listed = f"train_val2018/{super_name}/{c}/{rng.bytes(16).hex()}.jpg"
            images[listed] = _encode(rng, (10 + k, 8 + c))
            entries.append((listed, c))
    order = rng.permutation(len(entries))  # annotation order: unrelated to the folders
    entries = [entries[i] for i in order]
    return {"images": images, "lists": {"train": entries[4:], "test": entries[:4]}}


def test_inaturalist_from_tar_gz_and_from_folder(tmp_path):
    data = _inaturalist()
    names = image_lists.LtrInaturalist2018.LISTS
    _write_lists(tmp_path / "lists", data["lists"], names)
    (tmp_path / "manual").mkdir()
    members = {"train_val2018/": b"", "train_val2018/Aves/": b"", **data["images"]}
    (tmp_path / "manual/train_val2018.tar.gz").write_bytes(_tar_bytes(members, mode="w:gz"))
    config = _config(tmp_path, name="inaturalist2018", allow_unverified_archive=False)
    ds = image_lists.load_image_list_dataset(config)
    _assert_split(ds.train, data["lists"]["train"], data["images"])
    _assert_split(ds.test, data["lists"]["test"], data["images"])
    assert ds.class_names == ("0", "1", "2", "3", "4") and ds.verified is True
    assert "tensorflow" not in sys.modules
    _write_folders(tmp_path / "extracted", data["images"])
    config = _config(
        tmp_path,
        name="inaturalist2018",
        data_dir=str(tmp_path / "tfds2"),
        manual_dir=str(tmp_path / "extracted"),
        test_split="val",
    )
    from_folder = image_lists.load_image_list_dataset(config)
    for split in ("train", "test"):
        expected = _records(getattr(ds, split).source)
        assert _records(getattr(from_folder, split).source) == expected
    metadata = _builder(tmp_path, image_lists.LtrInaturalist2018).info.metadata
    assert metadata["image_sources"] == {"train_val2018": "archive train_val2018.tar.gz"}
    assert metadata["lists"]["train"]["published_sha256"] is None
    assert metadata["lists"]["train"]["sha256"] == _sha256(tmp_path / "lists" / names["train"])
