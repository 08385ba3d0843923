"""Long-tailed subsets (SPEC §1 counts, LDAM protocol) and shot groups."""

import numpy as np
import pytest

from ltr_jax.data.datasets import long_tail

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
