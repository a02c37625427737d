"""The three-way split: a test split once per data set (official files, or held out), then each
seed's train/validation split of the rest. Official files are written in torchvision's formats."""

import numpy as np
import pytest
from scipy.io import savemat

from shared.data.datasets import Dataset, load_dataset, split, with_test_split
from shared.errors import DatasetError
from tests.unit.test_dataset_files import RNG, dump_py2, write_cifar10, write_idx


def numbered() -> Dataset:
    """500 samples whose one feature is the sample's own number, so a sample can be followed across
    splits; classes of 50, 100, 150 and 200 samples, shuffled the same way every time."""
    y = np.random.default_rng(1).permutation(np.repeat(np.arange(4), [50, 100, 150, 200]))
    return Dataset("numbered", "tabular", np.arange(500, dtype=np.float32)[:, None], y.astype(np.int64),
                   ("a", "b", "c", "d"))


def ids(x: np.ndarray) -> set[int]:
    return {int(v) for v in x.ravel()}


def test_a_held_out_test_split_is_never_a_training_sample_of_any_seed():
    ds = numbered()
    tested = with_test_split(ds, 0.2, seed=0)
    assert tested.test_source == "held_out" and len(tested.y_test) == 100 and len(tested.y) == 400
    test = ids(tested.x_test)
    assert test.isdisjoint(ids(tested.x)) and test | ids(tested.x) == set(range(500))
    for seed in range(5):
        s = split(tested, seed, 0.25, standardize=False)
        assert test.isdisjoint(ids(s.x_train)) and test.isdisjoint(ids(s.x_val))
        assert ids(s.x_train) | ids(s.x_val) == ids(tested.x)


def test_the_held_out_split_is_stratified_and_the_same_every_time():
    ds = numbered()
    a = with_test_split(ds, 0.2, seed=0)
    again = with_test_split(numbered(), 0.2, seed=0)
    np.testing.assert_array_equal(a.x_test, again.x_test)  # another load of the same data: the same split
    np.testing.assert_allclose(np.bincount(a.y_test) / len(a.y_test), np.bincount(ds.y) / len(ds.y), atol=0.01)
    other = with_test_split(ds, 0.2, seed=1)  # data.test_seed chooses it, no training seed does
    assert ids(other.x_test) != ids(a.x_test)
    assert with_test_split(a, 0.5) is a  # split once: a second call takes nothing more away
    facts = a.facts()
    assert (facts.num_samples, facts.num_test, facts.test_source) == (400, 100, "held_out")


def test_a_class_too_rare_to_hold_out_is_named():
    ds = Dataset("tiny", "tabular", np.zeros((11, 2), np.float32), np.array([0] * 10 + [1]), ("common", "rare"))
    with pytest.raises(DatasetError, match=r"tiny: cannot hold out a stratified test split.*'rare' \(1\).*data.test_fraction"):
        with_test_split(ds, 0.2)
    two = Dataset("two", "tabular", np.zeros((202, 2), np.float32), np.array([0] * 100 + [1] * 100 + [2] * 2),
                  ("a", "b", "rare"))
    with pytest.raises(DatasetError, match=r"two: after its test split of 0.2, too few samples of 'rare' \(1 left\)"):
        with_test_split(two, 0.2)  # one left: no seed could put it on both sides of its train/validation split


def test_the_test_split_has_a_digest_every_job_carries():
    a, b = with_test_split(numbered(), 0.2, seed=0), with_test_split(numbered(), 0.2, seed=1)
    assert a.facts().test_digest == a.test_digest() != b.test_digest() and len(a.test_digest()) == 16
    assert numbered().test_digest() == ""  # no test split yet: nothing to check


def write_cifar10_test(root, n=6):
    data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in RNG.integers(0, 10, n)]
    dump_py2({b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data,
              b"filenames": [b"t.png"] * n}, root / "cifar-10-batches-py" / "test_batch")
    return data, labels


def write_cifar100(root, train=12, test=5):
    folder = root / "cifar-100-python"
    folder.mkdir()
    out = {}
    for name, n in (("train", train), ("test", test)):
        data, fine = RNG.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in RNG.integers(0, 100, n)]
        dump_py2({b"filenames": [b"x.png"] * n, b"batch_label": name.encode(), b"fine_labels": fine,
                  b"coarse_labels": [0] * n, b"data": data}, folder / name)
        out[name] = data, fine
    dump_py2({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
              b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}, folder / "meta")
    return out["test"]


def write_mnist(root, train=15, test=7):
    for prefix, n in (("train", train), ("t10k", test)):
        images, labels = RNG.integers(0, 256, (n, 28, 28)), RNG.integers(0, 10, n)
        write_idx(root / "MNIST/raw" / f"{prefix}-images-idx3-ubyte.gz", images, 2051, compress=True)
        write_idx(root / "MNIST/raw" / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049, compress=True)
    return images.reshape(n, -1), labels.tolist()


def write_svhn(root, train=6, test=4):
    for name, n in (("train", train), ("test", test)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = RNG.integers(1, 11, (n, 1)).astype(np.uint8)  # 10 is the digit 0
        savemat(root / f"{name}_32x32.mat", {"X": x, "y": y})
    return np.transpose(x, (3, 2, 0, 1)).reshape(n, -1), [0 if v == 10 else int(v) for v in y.ravel()]


@pytest.mark.parametrize("name, write, n_train", [
    ("cifar10", lambda root: (write_cifar10(root), write_cifar10_test(root))[1], 40),
    ("cifar100", write_cifar100, 12),
    ("mnist", write_mnist, 15),
    ("svhn", write_svhn, 6),
])
def test_an_official_test_split_is_used_where_its_files_are(tmp_path, name, write, n_train):
    pixels, labels = write(tmp_path)
    ds = with_test_split(load_dataset(name, data_dir=tmp_path), 0.2)
    assert ds.test_source == "official" and not ds.test_note
    assert len(ds.y) == n_train  # the training files whole: nothing held out of them
    assert ds.y_test.tolist() == labels
    np.testing.assert_allclose(ds.x_test.reshape(len(labels), -1), pixels / 255.0, rtol=1e-6)
    facts = ds.facts()
    assert (facts.num_samples, facts.num_test, facts.test_source) == (n_train, len(labels), "official")


def test_without_its_official_test_files_a_split_is_held_out_and_says_why(tmp_path):
    write_cifar10(tmp_path, per_batch=20)  # 100 training images, no test_batch
    ds = with_test_split(load_dataset("cifar10", data_dir=tmp_path), 0.2)
    assert ds.test_source == "held_out" and (len(ds.y), len(ds.y_test)) == (80, 20)
    assert "cifar-10-batches-py/test_batch" in ds.test_note and "held out" in ds.test_note
    assert ds.facts().test_note == ds.test_note
