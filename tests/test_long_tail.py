"""Long-tailed subsets (SPEC §1 counts, LDAM protocol) and shot groups."""

import numpy as np
import pytest

from ltr_jax.data.datasets import long_tail, records, registry

C10 = {10: 20431, 20: 17023, 50: 13996, 100: 12406, 200: 11203}
C100 = {10: 19573, 20: 15907, 50: 12608, 100: 10847, 200: 9502}


def _balanced(num_classes, per_class, seed=0):
    """Labels of a balanced split in a shuffled 'official' order, plus original indices."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    return labels, np.arange(len(labels))


@pytest.mark.parametrize("imbalance, total", sorted(C10.items()))
def test_cifar10_counts(imbalance, total):
    assert long_tail.long_tail_counts(5000, 10, imbalance).sum() == total


@pytest.mark.parametrize("imbalance, total", sorted(C100.items()))
def test_cifar100_counts(imbalance, total):
    assert long_tail.long_tail_counts(500, 100, imbalance).sum() == total


def test_cifar10_if100_per_class():
    expected = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert long_tail.long_tail_counts(5000, 10, 100).tolist() == expected


def test_subset_follows_ldam_protocol():
    """The LDAM code's loop over the original order picks the same images, in any storage order."""
    labels, index = _balanced(10, 500)
    counts = long_tail.long_tail_counts(500, 10, 100)
    np.random.seed(0)  # the LDAM reference loop, verbatim in spirit
    expected = []
    for c, n_c in enumerate(counts):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        expected.extend(idx[:n_c])
    # Store the split in a scrambled order: the subset must still be the same images.
    perm = np.random.default_rng(1).permutation(len(labels))
    got = long_tail.ldam_subset(labels[perm], index[perm], 10, 100)
    assert sorted(index[perm][got].tolist()) == sorted(np.asarray(expected).tolist())
    assert np.bincount(labels[perm][got], minlength=10).tolist() == counts.tolist()


def test_subset_leaves_global_rng_untouched():
    labels, index = _balanced(10, 50)
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    long_tail.ldam_subset(labels, index, 10, 10)
    assert np.random.random() == before


def test_shot_groups_cifar100_if100():
    groups = long_tail.shot_groups(long_tail.long_tail_counts(500, 100, 100), 100, 20)
    assert (len(groups.many), len(groups.medium), len(groups.few)) == (35, 35, 30)


def test_shot_groups_cifar10_if100_reference_thresholds():
    groups = long_tail.shot_groups(long_tail.long_tail_counts(5000, 10, 100), 500, 200)
    assert groups.as_dict() == {"many": [0, 1, 2, 3, 4], "medium": [5, 6], "few": [7, 8, 9]}


def test_bad_imbalance_factor():
    with pytest.raises(ValueError, match="imbalance_factor"):
        long_tail.long_tail_counts(500, 10, 0.5)


# --- The one place: cap, then long tail, for both kinds of data -------------------------------


def _data_config(**kw):
    from ltr_jax import config_lib

    config = config_lib.base_config().data
    config.update(kw)
    return config


def test_the_cap_comes_before_the_long_tail_and_keeps_the_imbalance():
    labels, index = _balanced(10, 104)
    config = _data_config(imbalance_factor=100, max_per_class=100)
    pos = long_tail.train_positions(labels, index, 10, config)
    counts = np.bincount(labels[pos], minlength=10)
    # The configured IF 100 on the capped classes (100 each): 100 ... 1, not a flat head.
    np.testing.assert_array_equal(counts, long_tail.long_tail_counts(100, 10, 100))
    assert counts[0] / counts[-1] == 100
    # The cap keeps the first images of each class in the source's order, then LDAM draws.
    assert set(pos) <= set(long_tail.cap_per_class(labels, 100))


def test_apply_cuts_in_memory_and_streamed_data_alike():
    labels, index = _balanced(4, 12, seed=1)
    images = np.arange(len(labels), dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3))
    split = records.Split(images.astype(np.uint8), labels.astype(np.int32), index)
    memory = records.Dataset(split, split, 4, ("a", "b", "c", "d"), verified=True)
    source = records.SourceSplit(list(range(len(labels))), labels.astype(np.int32))
    streamed = records.StreamedDataset(source, source, 4, ("a", "b", "c", "d"))
    config = _data_config(imbalance_factor=4, max_per_class=10, many_threshold=5, few_threshold=3)
    a = long_tail.apply(memory, config, name="x")
    b = long_tail.apply(streamed, config, name="x")
    assert not a.streamed and b.streamed
    np.testing.assert_array_equal(a.class_counts, [10, 6, 3, 2])
    np.testing.assert_array_equal(a.class_counts, b.class_counts)
    kept = a.train.images[:, 0, 0, 0]  # each image's pixel is its position in the source
    np.testing.assert_array_equal([b.train.source[i] for i in range(len(kept))], kept)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)  # the test split: capped only
    assert len(a.test_labels) == 40
    assert a.groups.as_dict() == {"many": [0, 1], "medium": [2], "few": [3]}


def test_a_dataset_name_travels_from_the_config_or_the_files():
    assert registry.dataset_name(_data_config(name="cifar10")) == "cifar10"
    folder = _data_config(name="image_folder", train_path="/data/digits/train")
    assert registry.dataset_name(folder) == "digits"
    assert (
        registry.dataset_name(_data_config(name="arrays", train_path="/d/mnist.npz,b")) == "mnist"
    )
    named = _data_config(name="arrays", train_path="/d/x.npz", dataset_name="my digits")
    assert registry.dataset_name(named) == "my digits"
