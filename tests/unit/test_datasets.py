"""The embedded data sets and the seeded, stratified, normalised split."""

import msgspec
import numpy as np
import pytest

from shared.data.datasets import LOADERS, known_datasets, load_dataset, split
from shared.errors import UnknownDatasetError


def test_digits_is_an_image_data_set():
    ds = load_dataset("digits")
    assert ds.kind == "image"
    assert ds.x.shape == (1797, 1, 8, 8)  # (N, C, H, W)
    assert ds.x.dtype == np.float32
    assert ds.y.shape == (1797,) and ds.y.dtype == np.int64
    assert ds.num_classes == 10
    assert ds.input_shape == (1, 8, 8)
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0  # pixels scaled from 0..16
    assert set(np.unique(ds.y)) == set(range(10))


@pytest.mark.parametrize("name, num_samples, num_features, num_classes", [
    ("breast_cancer", 569, 30, 2),
    ("wine", 178, 13, 3),
    ("iris", 150, 4, 3),
    ("synthetic", 1200, 20, 3),
    ("imbalanced", 5000, 20, 2),
])
def test_tabular_data_sets(name, num_samples, num_features, num_classes):
    ds = load_dataset(name)
    assert ds.name == name
    assert ds.kind == "tabular"
    assert ds.x.shape == (num_samples, num_features)  # (N, F)
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.num_classes == num_classes
    assert ds.input_shape == (num_features,)
    assert set(np.unique(ds.y)) == set(range(num_classes))


def test_facts_describe_the_data_set():
    assert msgspec.to_builtins(load_dataset("iris").facts()) == {
        "name": "iris", "kind": "tabular", "input_shape": [4], "num_classes": 3, "num_samples": 150,
        "class_names": ["setosa", "versicolor", "virginica"], "test_source": "", "num_test": 0, "test_note": "", "test_digest": "",
        "class_counts": [50, 50, 50], "input_dtype": "float32", "text": None, "columns": [], "notes": [],
        "encoding_settings": ""}
    rare = load_dataset("imbalanced").facts()
    assert rare.class_counts == [4950, 50] and rare.imbalanced and rare.imbalance_ratio() == 99.0


def test_names_ignore_case_and_surrounding_space():
    assert load_dataset("  Digits ").name == "digits"


def test_synthetic_is_the_same_every_time():
    again = LOADERS["synthetic"](None)
    np.testing.assert_array_equal(again.x, load_dataset("synthetic").x)


def test_known_datasets():
    assert known_datasets() == ["breast_cancer", "cifar10", "cifar100", "digits", "fashion_mnist", "imbalanced", "iris",
                                "mnist", "svhn", "synthetic", "wine", "csv:PATH:TARGET",
                                "parquet:PATH:TARGET", "hf:NAME"]


def test_unknown_name_lists_the_known_names():
    with pytest.raises(UnknownDatasetError) as caught:
        load_dataset("cifar11")
    message = str(caught.value)
    assert "cifar11" in message
    for name in known_datasets():
        assert name in message
    assert caught.value.known == known_datasets()


# ---- split ----
def test_split_is_reproducible_for_the_same_seed():
    ds = load_dataset("wine")
    a, b = split(ds, seed=3), split(ds, seed=3)
    for field in ("x_train", "y_train", "x_val", "y_val"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_split_differs_for_another_seed():
    ds = load_dataset("wine")
    a, b = split(ds, seed=3), split(ds, seed=4)
    assert a.x_val.shape == b.x_val.shape
    assert not np.array_equal(a.x_val, b.x_val)


def test_split_sizes_and_types():
    ds = load_dataset("digits")
    s = split(ds, seed=0, val_fraction=0.2)
    assert len(s.y_train) + len(s.y_val) == 1797
    assert len(s.y_val) == pytest.approx(0.2 * 1797, abs=1)
    assert s.x_train.shape[1:] == s.x_val.shape[1:] == (1, 8, 8)
    assert s.x_train.dtype == s.x_val.dtype == np.float32
    assert s.y_train.dtype == s.y_val.dtype == np.int64


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine", "iris"])
def test_split_is_stratified(name):
    ds = load_dataset(name)
    s = split(ds, seed=1, val_fraction=0.2)
    assert set(np.unique(s.y_val)) == set(range(ds.num_classes))
    full = np.bincount(ds.y) / len(ds.y)
    val = np.bincount(s.y_val, minlength=ds.num_classes) / len(s.y_val)
    np.testing.assert_allclose(val, full, atol=0.03)


def test_split_respects_subset_size():
    ds = load_dataset("digits")
    s = split(ds, seed=0, val_fraction=0.25, subset_size=400)
    assert len(s.y_train) + len(s.y_val) == 400
    assert len(s.y_val) == 100
    assert set(np.unique(s.y_val)) == set(range(10))
    assert set(np.unique(s.y_train)) == set(range(10))


def test_a_subset_larger_than_the_data_set_uses_everything():
    ds = load_dataset("iris")
    s = split(ds, seed=0, subset_size=10_000)
    assert len(s.y_train) + len(s.y_val) == 150


def test_images_are_normalised_per_channel_on_the_training_split():
    s = split(load_dataset("digits"), seed=0)
    assert s.x_train.mean(axis=(0, 2, 3)) == pytest.approx([0.0], abs=1e-4)
    assert s.x_train.std(axis=(0, 2, 3)) == pytest.approx([1.0], abs=1e-4)
    # the validation split uses the training statistics, so it is only close to them
    assert abs(float(s.x_val.mean())) < 0.1


@pytest.mark.parametrize("name", ["breast_cancer", "wine", "synthetic"])
def test_tables_are_normalised_per_feature_on_the_training_split(name):
    s = split(load_dataset(name), seed=2)
    features = s.x_train.shape[1]
    np.testing.assert_allclose(s.x_train.mean(axis=0), np.zeros(features), atol=1e-4)
    np.testing.assert_allclose(s.x_train.std(axis=0), np.ones(features), atol=1e-3)


@pytest.mark.parametrize("name, shape", [("wine", (1, 13)), ("digits", (1, 1, 1, 1))])
def test_without_standardisation_the_same_rows_stay_raw(name, shape):
    ds = load_dataset(name)
    raw, scaled = split(ds, seed=5, standardize=False), split(ds, seed=5)
    np.testing.assert_array_equal(raw.y_train, scaled.y_train)  # the same draw: only the scaling differs
    assert raw.x_train.dtype == raw.x_val.dtype == np.float32
    # every value is a row of the data set as loaded, and the kept preprocessing is the identity
    rows = {row.tobytes() for row in ds.x.reshape(len(ds.x), -1)}
    assert all(row.tobytes() in rows for row in raw.x_val.reshape(len(raw.x_val), -1))
    assert raw.mean.shape == raw.std.shape == scaled.mean.shape == shape
    assert (raw.mean == 0).all() and (raw.std == 1).all()
    np.testing.assert_allclose((raw.x_val - scaled.mean) / scaled.std, scaled.x_val, atol=1e-4)


def test_split_leaves_the_cached_data_set_untouched():
    ds = load_dataset("wine")
    before = ds.x.copy()
    split(ds, seed=0)
    np.testing.assert_array_equal(ds.x, before)
    assert load_dataset("wine") is ds


def test_the_catalog_names_exactly_the_loaders():
    """shared.data.catalog (names only, for the CLI) and LOADERS must not drift apart."""
    from shared.data.catalog import NAMES
    assert sorted(NAMES) == sorted(LOADERS)
    assert known_datasets() == sorted(LOADERS) + ["csv:PATH:TARGET", "parquet:PATH:TARGET", "hf:NAME"]


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast_cancer"])
def test_the_smallest_subset_is_the_least_a_stratified_split_takes(name):
    ds = load_dataset(name)
    least = ds.facts().smallest_subset(0.2)
    split(ds, 0, 0.2, least)
    with pytest.raises(ValueError):
        split(ds, 0, 0.2, least - 1)
