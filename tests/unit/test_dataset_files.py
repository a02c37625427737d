"""torchvision's on-disk formats and CSV files, written small and read through the product's loaders."""

import gzip
import pickle
import struct

import numpy as np
import pytest
from scipy.io import savemat

from shared.data.datasets import FASHION_CLASSES, MNIST_CLASSES, dataset_key, load_dataset
from shared.errors import DatasetError, DatasetNotFoundError, UnknownDatasetError

RNG = np.random.default_rng(0)


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the CIFAR files: bytes as Python 2 `str` (SHORT_BINSTRING /
    BINSTRING, which Python 3 reads back as str under encoding="latin1" and as bytes under "bytes"), and
    arrays through `numpy.core.multiarray._reconstruct`, the name the original files carry."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__module__", "") == "numpy._core.multiarray":  # numpy >= 2 names it so
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n" + (name or obj.__name__).encode() + b"\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def dump_py2(obj, path):
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def dump_py3(obj, path):  # a copy re-pickled by Python 3, bytes keys kept
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def test_the_py2_writer_gives_the_originals_opcodes(tmp_path):
    dump_py2({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]}, tmp_path / "b")
    raw = (tmp_path / "b").read_bytes()
    assert raw.startswith(b"\x80\x02}q\x00(U\x04data") and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert set(pickle.loads(raw, encoding="latin1")) == {"data", "labels"}  # how torchvision reads it
    assert set(pickle.loads(raw, encoding="bytes")) == {b"data", b"labels"}  # how the CIFAR page says to


def write_cifar10(root, per_batch=8, dump=dump_py2):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = []
    for i in range(1, 6):
        data = RNG.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch_labels = [int(v) for v in RNG.integers(0, 10, per_batch)]
        labels += batch_labels
        dump({b"batch_label": b"training batch %d of 5" % i, b"labels": batch_labels, b"data": data,
              b"filenames": [b"x.png"] * per_batch}, folder / f"data_batch_{i}")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump({b"label_names": [n.encode() for n in names], b"num_cases_per_batch": per_batch, b"num_vis": 3072},
         folder / "batches.meta")
    return labels, names


def write_idx(path, array, magic, compress=False):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("dump", [dump_py2, dump_py3])
def test_cifar10_reads_the_python_pickles(tmp_path, dump):
    labels, names = write_cifar10(tmp_path, dump=dump)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.x.shape == (40, 3, 32, 32) and ds.x.dtype == np.float32
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert ds.y.tolist() == labels and list(ds.class_names) == names and ds.kind == "image"


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = RNG.integers(0, 256, (12, 3072), dtype=np.uint8)
    fine = [int(v) for v in RNG.integers(0, 100, 12)]
    dump_py2({b"filenames": [b"x.png"] * 12, b"batch_label": b"training batch 1 of 1", b"fine_labels": fine,
              b"coarse_labels": [0] * 12, b"data": data}, folder / "train")
    dump_py2({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
              b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}, folder / "meta")
    ds = load_dataset("CIFAR-100", data_dir=tmp_path)
    assert ds.x.shape == (12, 3, 32, 32) and ds.num_classes == 100 and ds.y.tolist() == fine
    np.testing.assert_allclose(ds.x[0].reshape(-1), data[0] / 255.0, rtol=1e-6)


@pytest.mark.parametrize("name, folder, classes, compress", [
    ("mnist", "MNIST", MNIST_CLASSES, False),
    ("fashion_mnist", "FashionMNIST", FASHION_CLASSES, True),
])
def test_mnist_like_reads_idx_files(tmp_path, name, folder, classes, compress):
    images = RNG.integers(0, 256, (15, 28, 28))
    labels = RNG.integers(0, 10, 15)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / folder / "raw" / f"train-images-idx3-ubyte{suffix}", images, 2051, compress)
    write_idx(tmp_path / folder / "raw" / f"train-labels-idx1-ubyte{suffix}", labels, 2049, compress)
    ds = load_dataset(name, data_dir=tmp_path)
    assert ds.x.shape == (15, 1, 28, 28) and ds.y.tolist() == labels.tolist() and ds.class_names == classes
    np.testing.assert_allclose(ds.x[3, 0], images[3] / 255.0, rtol=1e-6)


def test_a_swapped_idx_file_is_named(tmp_path):
    write_idx(tmp_path / "MNIST/raw/train-images-idx3-ubyte", RNG.integers(0, 10, 5), 2049)
    write_idx(tmp_path / "MNIST/raw/train-labels-idx1-ubyte", RNG.integers(0, 10, 5), 2049)
    with pytest.raises(DatasetError, match="not an IDX file of the expected kind"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((5, 28, 28)), np.zeros(4), "5 images but 4 labels"),
    (np.zeros((5, 28, 28)), None, "the file is truncated"),
])
def test_inconsistent_idx_files_are_named(tmp_path, images, labels, message):
    raw = tmp_path / "MNIST/raw"
    write_idx(raw / "train-images-idx3-ubyte", images, 2051)
    if labels is None:  # a download cut short: the header promises 5 labels, 3 follow
        header = (2049).to_bytes(4, "big") + (5).to_bytes(4, "big")
        raw.joinpath("train-labels-idx1-ubyte").write_bytes(header + b"\0" * 3)
    else:
        write_idx(raw / "train-labels-idx1-ubyte", labels, 2049)
    with pytest.raises(DatasetError, match=message):
        load_dataset("mnist", data_dir=tmp_path)


def test_a_corrupt_cifar_pickle_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py/data_batch_3").write_bytes(b"\x80\x02}q\x00(U\x04da")
    with pytest.raises(DatasetError, match="data_batch_3: not a readable CIFAR pickle"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_svhn_reads_the_mat_file_with_ten_meaning_zero(tmp_path):
    x = RNG.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9], [5]], dtype=np.uint8)
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    ds = load_dataset("svhn", data_dir=tmp_path)
    assert ds.x.shape == (6, 3, 32, 32) and ds.y.tolist() == [0, 1, 2, 0, 9, 5]
    np.testing.assert_allclose(ds.x[2, 1], x[:, :, 1, 2] / 255.0, rtol=1e-6)  # channel 1 of image 2, H x W


@pytest.mark.parametrize("name, fragment", [
    ("cifar10", "cifar-10-batches-py/data_batch_1"),
    ("cifar100", "cifar-100-python/train"),
    ("mnist", "MNIST/raw/train-images-idx3-ubyte[.gz]"),
    ("fashionmnist", "FashionMNIST/raw/train-images-idx3-ubyte[.gz]"),
    ("svhn", "train_32x32.mat"),
])
def test_a_missing_data_set_says_where_and_how(tmp_path, name, fragment):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(name, data_dir=tmp_path / "empty")
    message = str(caught.value)
    assert str(tmp_path / "empty" / fragment) in message  # the exact path expected
    assert "download" in message
    assert "download_missing" not in message  # a hint names what a user types, added where it is shown


def test_csv_with_a_string_target(tmp_path):
    path = tmp_path / "flowers.csv"
    path.write_text("a,b,kind\n1,2,rose\n3.5,4,tulip\n5,6,rose\n\n")
    ds = load_dataset("csv:flowers.csv:kind", data_dir=tmp_path)  # relative to the data directory
    assert ds.kind == "tabular" and ds.x.tolist() == [[1, 2], [3.5, 4], [5, 6]]
    assert ds.class_names == ("rose", "tulip") and ds.y.tolist() == [0, 1, 0]


def test_csv_with_a_numeric_target_orders_classes_numerically(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("label,x\n10,1\n2,2\n10,3\n")
    ds = load_dataset(f"csv:{path}:label", data_dir=tmp_path)  # absolute, inside it
    assert ds.class_names == ("2", "10") and ds.y.tolist() == [1, 0, 1]


def test_csv_tolerates_a_byte_order_mark_and_spaced_header(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffa, kind\n1,x\n2,y\n".encode("utf-8"))
    ds = load_dataset(f"csv:{path}:kind", data_dir=tmp_path)
    assert ds.x.tolist() == [[1], [2]] and ds.class_names == ("x", "y")


def test_csv_blanks_and_text_are_read_not_refused(tmp_path):
    """What the strict reader refused: a blank cell is imputed, text is a category, a row whose
    target is blank is dropped with a note."""
    path = tmp_path / "mixed.csv"
    path.write_text("a,colour,kind\n1,red,x\n,blue,y\n\n\n3,red,\n4, ?,y\n")
    ds = load_dataset(f"csv:{path}:kind", data_dir=tmp_path)
    facts = ds.facts()
    assert [(c.name, c.kind, c.missing) for c in facts.columns] == [("a", "numeric", 1), ("colour", "category", 1)]
    assert facts.notes == ["1 of 4 rows dropped: their target 'kind' is blank"]
    assert ds.class_names == ("x", "y") and ds.input_shape == (2 + 2 + 1 + 1,)  # a, its indicator; red, blue, other, blank


@pytest.mark.parametrize("content, target, message", [
    ("a,b\n1,2\n2,3\n", "kind", "no target column 'kind'; columns: a, b"),
    ("a,kind\n1,x,3\n2,y\n", "kind", "a row has more fields than the header"),
    ("a,kind\n1,x\n2,y,3\n", "kind", "Expected 2 fields in line 3, saw 3"),
    ("a,kind\n1,x\n2,x\n3,x\n", "kind", "the target 'kind' has one class only ('x')"),
    ("a,kind\n1,0.5\n2,1.25\n3,2\n", "kind", "a regression target; this product classifies"),
    ("a,kind\n,\n,\n", "kind", "every row's target 'kind' is blank"),
    ("a,b,kind\n,,x\n,?,y\n", "kind", "no usable feature column (a: all blank; b: all blank)"),
    ("a,kind\n", "kind", "needs a header row and at least one data row"),
    ("", "kind", "needs a header row and at least one data row"),
])
def test_csv_errors_are_specific(tmp_path, content, target, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(f"csv:{path}:{target}", data_dir=tmp_path)


def test_names_are_checked_without_loading():
    assert dataset_key("Fashion-MNIST") == "fashion_mnist" and dataset_key("csv:/x/y.csv:t") == "csv:/x/y.csv:t"
    with pytest.raises(UnknownDatasetError):
        dataset_key("csv:/only/a/path.csv")
    with pytest.raises(DatasetNotFoundError, match="put the CSV file there"):
        load_dataset("csv:no/such/file.csv:t")


def test_download_is_only_attempted_when_asked_and_says_why_it_cannot(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="downloading 'mnist'") as caught:
        load_dataset("mnist", data_dir=tmp_path, download_missing=True)
    assert str(tmp_path) in str(caught.value)  # torchvision is absent or cannot reach the internet here
