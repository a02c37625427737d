"""Data sets: torchvision's image data sets read from a data directory in their on-disk formats,
tables from CSV and Parquet files (shared.data.tables), the embedded ones shipped in scikit-learn, and synthetic data for
smoke tests.

The image data sets are read from exactly the files and folders torchvision's loaders use
(`cifar-10-batches-py/`, `cifar-100-python/`, `MNIST/raw/`, `FashionMNIST/raw/`,
`train_32x32.mat`; `shared.data.files.FILES` names each, and the checks at submission look for
the same), so a data directory torchvision downloaded into works as it is. A table's file is read
from the data directory only (`shared.data.files.table_file`). They are
read here rather than through torchvision itself: the only torchvision wheel for this
project's torch (torchvision 0.28.0 for torch 2.13.0+cpu) is a CUDA build whose `_C.so` needs
libtorch_cuda.so, so `import torchvision` fails with "operator torchvision::nms does not exist"
(pytorch/vision#9085). The readers follow torchvision's (`datasets/cifar.py`, `mnist.py`,
`svhn.py`): same files, same pickle decoding, same axis order and class names.

Every data set is split three ways (`with_test_split`, then `split`): a test split first, the
same for every seed and every run (the set's official test files where it has them and they are
there; otherwise a stratified `data.test_fraction` of it, drawn with `data.test_seed`), then each
seed's stratified train/validation split from the rest. A test sample is never a training sample
of any seed.

Everything is loaded on the trusted side; the evaluation container receives the training
split and the validation inputs only (the test inputs instead, once, when a run's best candidate
is tested), never the validation or test labels.
"""

from __future__ import annotations

import hashlib
import gzip
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from sklearn import datasets as skd

from shared.data.encoders import Encoder
from shared.data.catalog import ALIASES, NAMES, dataset_key, known_datasets, parse_table_name, table_format  # noqa: F401 - re-exported
from shared.data.splits import Split, split, with_test_split  # noqa: F401 - re-exported
from shared.data.files import SOURCES, TEST_FILES, image_files, table_file
from shared.data.tables import load_table
from shared.errors import DatasetError, DatasetNotFoundError
from shared.messaging.messages import DatasetFacts
from shared.runtime.config import DataConfig

DEFAULT_DATA_DIR = DataConfig().dir  # data.dir's default, for callers with no configuration
_digests: dict[tuple[int, int, int], str] = {}  # Dataset.test_digest's, by its arrays (kept as long as they are)


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: Literal["image", "tabular", "text"]
    # (N, C, H, W) float32 for images, (N, F) float32 for numeric tables; with an `encoder`, the raw
    # rows as an object array ((N, columns) cells of a table, (N,) or (N, 2) strings of text), which
    # each seed's split encodes with what it fits on its training split (shared.data.encoders)
    x: np.ndarray
    y: np.ndarray  # (N,) int64 class indices
    class_names: tuple[str, ...]
    # ---- the test split, apart from (x, y): the official one as loaded, or after with_test_split ----
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    test_source: str = ""  # "official" | "held_out"; "" before with_test_split (and no official one)
    test_note: str = ""  # why a set with official test files holds out a split instead
    encoder: Encoder | None = None  # raw rows -> model inputs, fitted per seed (None: x is the inputs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.encoder.output_shape) if self.encoder else tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def test_digest(self) -> str:
        """Which test split this is, as a digest of its inputs and labels and of the pool's size: the
        planner's and every evaluator's must match, or a test sample could be another's training one."""
        if self.y_test is None:
            return ""
        key = (id(self.x_test), id(self.y_test), len(self.y))
        if key not in _digests:
            h = hashlib.sha256(_content_bytes(self.x_test))
            h.update(np.ascontiguousarray(self.y_test).tobytes())
            h.update(str(len(self.y)).encode())
            _digests[key] = h.hexdigest()[:16]
        return _digests[key]

    def planned(self, input_shape: list[int], vocab_size: int = 0) -> Dataset:
        """This data set encoded to the inputs a job's model was built for (EvalJob.input_shape and
        vocab_size, the planner's facts); ValueError saying how they differ where its encoding cannot
        give them (another file, other data settings on this machine). [] checks nothing."""
        if not input_shape or (list(self.input_shape) == list(input_shape) and vocab_size in (0, getattr(self.encoder, "vocab_size", 0))):
            return self
        resize = getattr(self.encoder, "sized", None)
        if resize is None:
            raise ValueError(f"its inputs here are {list(self.input_shape)}, the planner's {list(input_shape)}")
        return replace(self, encoder=resize(list(input_shape), vocab_size))

    def facts(self) -> DatasetFacts:
        return DatasetFacts(name=self.name, kind=self.kind, input_shape=list(self.input_shape),
                            num_classes=self.num_classes, num_samples=int(self.x.shape[0]),
                            class_names=list(self.class_names), test_source=self.test_source,
                            num_test=0 if self.y_test is None else int(len(self.y_test)), test_note=self.test_note,
                            test_digest=self.test_digest(),
                            class_counts=np.bincount(self.y, minlength=self.num_classes).tolist(),
                            **(self.encoder.facts() if self.encoder else {}))


def _content_bytes(x: np.ndarray) -> bytes:
    """An array's content as bytes: its buffer for numbers; for raw rows (an object array of text or
    table cells, whose buffer holds pointers) each cell's text, with its type, separated unambiguously."""
    if x.dtype != object:
        return np.ascontiguousarray(x).tobytes()
    return "\x1f".join(f"{type(v).__name__}:{v}" for v in x.ravel()).encode("utf-8", "surrogatepass")


def _digits() -> Dataset:
    bunch = skd.load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)  # pixel values 0..16 -> 0..1
    return Dataset("digits", "image", x, bunch.target.astype(np.int64), tuple(str(n) for n in bunch.target_names))


def _sklearn_tabular(name: str, loader: Callable) -> Callable[[Path], Dataset]:
    def load(root: Path) -> Dataset:  # embedded in scikit-learn: no data directory
        bunch = loader()
        return Dataset(name, "tabular", bunch.data.astype(np.float32), bunch.target.astype(np.int64),
                       tuple(str(n) for n in bunch.target_names))
    return load


def _synthetic() -> Dataset:
    """Smoke tests only: a seeded 3-class problem with 20 features, 10 of them informative."""
    x, y = skd.make_classification(n_samples=1200, n_features=20, n_informative=10, n_classes=3, random_state=0)
    return Dataset("synthetic", "tabular", x.astype(np.float32), y.astype(np.int64), ("0", "1", "2"))


def _imbalanced() -> Dataset:
    """A seeded binary table with a 1% positive class (50 of 5,000; 10 in a 0.2 validation split), separable
    enough (class_sep 1.5) that a small MLP reaches a PR-AUC near 0.75 with class weights, 0.65 without:
    where accuracy says little (99% for always "negative"), PR-AUC and the rare class's recall do,
    and class weights matter. No label noise (flip_y=0), so every positive is a real one."""
    x, y = skd.make_classification(n_samples=5000, n_features=20, n_informative=6, n_redundant=4, weights=[0.99, 0.01],
                                   flip_y=0.0, class_sep=1.5, random_state=0)
    return Dataset("imbalanced", "tabular", x.astype(np.float32), y.astype(np.int64), ("negative", "positive"))


# ---- torchvision's on-disk formats ----
MNIST_CLASSES = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven",
                 "8 - eight", "9 - nine")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def _images(name: str, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...],
            test: tuple[np.ndarray, np.ndarray] | str) -> Dataset:
    """uint8 (N, C, H, W) -> float32 in [0, 1]; `test`: the official test split's (x, y), or why
    there is none (its files are missing)."""
    if isinstance(test, str):
        return Dataset(name, "image", (x.astype(np.float32) / 255.0), y.astype(np.int64), classes, test_note=test)
    return Dataset(name, "image", (x.astype(np.float32) / 255.0), y.astype(np.int64), classes,
                   test[0].astype(np.float32) / 255.0, test[1].astype(np.int64), "official")


def _official(key: str, root: Path, read: Callable[[list[Path]], tuple[np.ndarray, np.ndarray]]
              ) -> tuple[np.ndarray, np.ndarray] | str:
    """The official test split read by `read` from its TEST_FILES, or, where any is missing, a note
    saying so (a stratified share of the training files is held out instead: with_test_split)."""
    try:
        return read(image_files(key, root, test=True))
    except DatasetNotFoundError:
        missing = ", ".join(str(root / name) for name in TEST_FILES[key])
        return (f"the official test files of {key} are not all there ({missing}); a stratified share of its "
                f"training files is held out as the test split instead ({SOURCES[key].format(root=root)} for them)")


def _unpickle(path: Path) -> dict:
    """A CIFAR pickle: Python 2's (str keys once decoded as latin1, as torchvision reads them) or
    a re-pickled one with bytes keys; names come back as str either way."""
    try:
        with open(path, "rb") as handle:
            raw = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable CIFAR pickle ({exc}); extract the archive again") from exc
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: not a CIFAR batch (a {type(raw).__name__}, expected a dict)")
    text = lambda v: v.decode("latin1") if isinstance(v, bytes) else v  # noqa: E731
    return {text(k): ([text(n) for n in v] if isinstance(v, list) else v) for k, v in raw.items()}


def _cifar_batches(paths: list[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    parts = [_unpickle(p) for p in paths]
    x = np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts]).reshape(-1, 3, 32, 32)
    return x, np.concatenate([np.asarray(p[label_key]) for p in parts])


def _cifar10(root: Path) -> Dataset:
    *batches, meta = image_files("cifar10", root)
    x, y = _cifar_batches(batches, "labels")
    test = _official("cifar10", root, lambda paths: _cifar_batches(paths, "labels"))
    return _images("cifar10", x, y, tuple(_unpickle(meta)["label_names"]), test)


def _cifar100(root: Path) -> Dataset:
    train, meta = image_files("cifar100", root)
    x, y = _cifar_batches([train], "fine_labels")
    test = _official("cifar100", root, lambda paths: _cifar_batches(paths, "fine_labels"))
    return _images("cifar100", x, y, tuple(_unpickle(meta)["fine_label_names"]), test)


def _idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (MNIST's format), plain or gzipped: big-endian magic, dimensions, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetError(f"{path}: not an IDX file of the expected kind (magic {found}, expected {magic})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) - 4 - 4 * ndim != int(np.prod(dims)):
        raise DatasetError(f"{path}: {len(data) - 4 - 4 * ndim} bytes of data, its header says {dims}; "
                           "the file is truncated, download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_pair(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's images and labels files -> (N, 1, 28, 28) uint8, (N,)."""
    images, labels = paths
    x, y = _idx(images, 2051), _idx(labels, 2049)
    if len(x) != len(y):
        raise DatasetError(f"{images.parent}: {len(x)} images but {len(y)} labels; the two files are from "
                           "different sets")
    return x[:, None, :, :], y


def _mnist_like(name: str, classes: tuple[str, ...]) -> Callable[[Path], Dataset]:
    def load(root: Path) -> Dataset:
        x, y = _idx_pair(image_files(name, root))
        return _images(name, x, y, classes, _official(name, root, _idx_pair))
    return load


def _svhn_mat(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    (path,) = paths
    from scipy.io import loadmat  # scipy comes with scikit-learn

    try:
        mat = loadmat(path)
        x = np.transpose(mat["X"], (3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W), as torchvision does
        y = mat["y"].astype(np.int64).squeeze(1)
    except Exception as exc:  # noqa: BLE001 - scipy's MatReadError, a ValueError, a missing key: a bad file each
        raise DatasetError(f"{path}: not SVHN's {path.name} ({type(exc).__name__}: {exc}); download it again") from exc
    y[y == 10] = 0  # SVHN labels the digit 0 as 10
    return x, y


def _svhn(root: Path) -> Dataset:
    x, y = _svhn_mat(image_files("svhn", root))
    return _images("svhn", x, y, tuple(str(d) for d in range(10)), _official("svhn", root, _svhn_mat))


LOADERS: dict[str, Callable[[Path], Dataset]] = {
    "digits": lambda root: _digits(),
    "breast_cancer": _sklearn_tabular("breast_cancer", skd.load_breast_cancer),
    "wine": _sklearn_tabular("wine", skd.load_wine),
    "iris": _sklearn_tabular("iris", skd.load_iris),
    "synthetic": lambda root: _synthetic(),
    "imbalanced": lambda root: _imbalanced(),
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "mnist": _mnist_like("mnist", MNIST_CLASSES),
    "fashion_mnist": _mnist_like("fashion_mnist", FASHION_CLASSES),
    "svhn": _svhn,
}
_cache: dict[tuple, Dataset] = {}  # (key, data dir, the settings its encoding depends on) -> loaded


TORCHVISION_CLASSES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashion_mnist": "FashionMNIST",
                       "svhn": "SVHN"}


def download(key: str, root: Path) -> None:
    """Fetch a torchvision data set into `root` with torchvision's own downloader (only when asked:
    it needs torchvision installed and internet access, which the machines this is built on lack)."""
    try:
        import torchvision.datasets as tvd
    except Exception as exc:  # noqa: BLE001 - a broken torchvision raises RuntimeError, not ImportError
        raise DatasetError(f"downloading {key!r} needs torchvision matching your torch ({exc}); "
                           f"or get the files yourself: {SOURCES[key].format(root=root)}") from exc
    cls = getattr(tvd, TORCHVISION_CLASSES[key])
    try:
        cls(str(root), split="train", download=True) if key == "svhn" else cls(str(root), train=True, download=True)
    except Exception as exc:  # noqa: BLE001 - no network, a checksum mismatch, a full disk
        raise DatasetError(f"downloading {key!r} into {root} failed: {exc}") from exc


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, download_missing: bool = False,
                 any_csv_path: bool = False, max_categories: int = DataConfig().max_categories,
                 config: DataConfig | None = None) -> Dataset:
    """The data set called `name`; torchvision's files, tables (CSV, Parquet) and hf: sets are read
    from `data_dir` (default ~/.cache/pytorch-researcher/data; hf: sets also from a Hugging Face
    cache, shared.data.hf_files). Nothing is downloaded unless `download_missing` is set: a missing
    data set raises DatasetNotFoundError saying which files are expected where and how to get them.
    A table's path outside `data_dir` is refused unless `any_csv_path` is set, which only trusted
    local commands do (quick-evaluator, on its user's own files). `max_categories`:
    data.max_categories, a category column's one-hot slots; `config`: the data settings, which then
    give max_categories too, and how text becomes token ids (data.tokenizer, vocab_size, max_length;
    the defaults without it)."""
    key = dataset_key(name)
    root = Path(data_dir or DEFAULT_DATA_DIR).expanduser()
    fmt = table_format(key)
    # a table's path is checked before the cache, so a load allowed anywhere never serves a confined one
    path = table_file(parse_table_name(key)[1], root, confine=not any_csv_path, fmt=fmt) if fmt else None
    text = config or DataConfig()
    max_categories = config.max_categories if config is not None else max_categories  # the settings' own, when given
    # an encoded set's settings are part of it: one loaded per setting (the same object each time for
    # the same one, so with_test_split's and the digests' caches hold)
    settings = (max_categories,) if fmt else (text.tokenizer, text.vocab_size, text.max_length) if key.startswith("hf:") else ()
    cached = (key, str(root), *settings)
    if cached not in _cache:
        if key.startswith("hf:"):
            from shared.data.text import load_text  # imports datasets: only for the sets that need it

            _cache[cached] = load_text(key, root, text, download_missing)
        else:
            _cache[cached] = load_table(key, path, max_categories) if path else _load(key, root, download_missing)
    return _cache[cached]


def _load(key: str, root: Path, download_missing: bool) -> Dataset:
    try:
        return LOADERS[key](root)
    except DatasetNotFoundError:
        if not (download_missing and key in TORCHVISION_CLASSES):
            raise
    download(key, root)
    return LOADERS[key](root)
