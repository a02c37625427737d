"""Where each data set's files lie under the data directory, and the checks of them that read
no data: the planner refuses a goal whose files are missing when it is submitted, `researcher
run` before its stack starts, and the loaders in `shared.data.datasets` open exactly the files
found here, so the check and the loaders cannot drift apart. No numpy: the CLI imports this.

The data directory is `data.dir`. A table's path (`csv:` or `parquet:`) is relative to it, or absolute and
inside it once symlinks and `..` are resolved: a goal arrives over NATS from any client, and
must never make a service read an arbitrary file of its host."""

from __future__ import annotations

import csv
from pathlib import Path

from shared.errors import DatasetError, DatasetNotFoundError, OutsideDataDirError

# Each torchvision data set's files, relative to the data directory, in the layout torchvision's
# own loaders write (so a folder torchvision downloaded into works as it is); "[.gz]": the file
# plain or gzipped, whichever is there.
_IDX = ("train-images-idx3-ubyte[.gz]", "train-labels-idx1-ubyte[.gz]")  # MNIST's: images, labels
FILES: dict[str, tuple[str, ...]] = {
    "cifar10": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)) + ("cifar-10-batches-py/batches.meta",),
    "cifar100": ("cifar-100-python/train", "cifar-100-python/meta"),
    "mnist": tuple(f"MNIST/raw/{name}" for name in _IDX),
    "fashion_mnist": tuple(f"FashionMNIST/raw/{name}" for name in _IDX),
    "svhn": ("train_32x32.mat",),
}
# Each one's official test split, in the same layout: used as the held-out test split where all
# of its files are there (a stratified share of the training files is held out where they are not)
TEST_FILES: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar-10-batches-py/test_batch",),
    "cifar100": ("cifar-100-python/test",),
    "mnist": ("MNIST/raw/t10k-images-idx3-ubyte[.gz]", "MNIST/raw/t10k-labels-idx1-ubyte[.gz]"),
    "fashion_mnist": ("FashionMNIST/raw/t10k-images-idx3-ubyte[.gz]", "FashionMNIST/raw/t10k-labels-idx1-ubyte[.gz]"),
    "svhn": ("test_32x32.mat",),
}
SOURCES = {  # how to get the files by hand; {root} is the data directory
    "cifar10": "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it into {root}",
    "cifar100": "download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and extract it into {root}",
    "mnist": "download train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz from "
             "https://ossci-datasets.s3.amazonaws.com/mnist/ into {root}/MNIST/raw",
    "fashion_mnist": "download train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz from "
                     "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ into {root}/FashionMNIST/raw",
    "svhn": "download train_32x32.mat from http://ufldl.stanford.edu/housenumbers/ into {root}",
}
# What a user changes to point a command at its data, appended to a data set's problem where it
# is shown: a stack's planner (whose user ran `make up` or an embedded stack), or the local CLI.
STACK_HINT = ("the stack reads data.dir (RESEARCHER_DATA__DIR); under `make up` that is /data: the head "
              "machine's ./data, or the folder RESEARCHER_DATA_DIR names when it is set")
LOCAL_HINT = ("the data directory is data.dir: set RESEARCHER_DATA__DIR=DIR, or data: {dir: DIR} in "
              "config/researcher.yaml")


def with_hint(exc: DatasetError, hint: str) -> str:
    """`exc`'s message, followed by `hint` where the data directory is what to change (a file not
    there, a path outside it); a malformed file or an unknown name is fixed elsewhere."""
    return f"{exc}; {hint}" if isinstance(exc, (DatasetNotFoundError, OutsideDataDirError)) else str(exc)


def image_files(key: str, root: Path, test: bool = False) -> list[Path]:
    """The path of each of `key`'s FILES (TEST_FILES with `test`) under `root`, in their order;
    DatasetNotFoundError naming the missing ones and how to get them. Only looks: opens nothing."""
    found, missing = [], []
    for name in (TEST_FILES if test else FILES)[key]:
        stem = name.removesuffix("[.gz]")
        options = [root / stem, root / f"{stem}.gz"] if name != stem else [root / stem]
        present = [p for p in options if p.is_file()]
        if present:
            found.append(present[0])
        else:
            missing.append(str(root / name))
    if missing:
        raise DatasetNotFoundError(key, missing[:2] + (["..."] if len(missing) > 2 else []),
                                   SOURCES[key].format(root=root))
    return found


FORMATS = {"csv": "CSV", "parquet": "Parquet"}  # a table's name prefix -> its format's name


def table_file(path_text: str, root: Path, confine: bool = True, fmt: str = "csv") -> Path:
    """The file `csv:PATH:TARGET` (or `parquet:`) names: PATH relative to the data directory `root`,
    or absolute and inside it (symlinks and `..` resolved). `confine=False` is for trusted local
    commands only (quick-evaluator): there an absolute PATH may lie anywhere."""
    given = Path(path_text).expanduser()
    path = (root / given).resolve()  # an absolute PATH replaces root
    if confine and not path.is_relative_to(root.resolve()):
        raise OutsideDataDirError(path_text, str(root), str(path))
    if not path.is_file():  # also refuses a FIFO or a device, which would block or never end
        raise DatasetNotFoundError(path_text, [str(path)],
                                   f"put the {FORMATS[fmt]} file there (a header row, then a row per sample)")
    return path


def table_header(path: Path, fmt: str) -> list[str]:
    """A table's column names, reading only a CSV file's header row or a Parquet file's schema."""
    if fmt == "csv":
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if magic == b"PAR1":  # the most likely slip: a Parquet file named as csv:
            raise DatasetError(f"{path}: a Parquet file, not CSV text; name it parquet:PATH:TARGET")
        return csv_header(path)
    import pyarrow.parquet as pq  # pyarrow comes with datasets; imported only here, the CLI starts fast

    try:
        return [name.strip() for name in pq.read_schema(path).names if not name.startswith("__index_level_")]
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise table_unreadable(path, fmt, exc) from exc


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's header (its first non-blank row), reading that row only."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
            for row in csv.reader(handle):
                if any(cell.strip() for cell in row):
                    return [cell.strip() for cell in row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise table_unreadable(path, "csv", exc) from exc
    raise DatasetError(f"{path}: needs a header row and at least one data row")


def table_unreadable(path: Path, fmt: str, exc: Exception) -> DatasetError:
    if fmt == "parquet":
        return DatasetError(f"{path}: cannot be read as a Parquet file ({exc}); write it with pandas' to_parquet "
                            "or pyarrow, or name a CSV file as csv:PATH:TARGET")
    return DatasetError(f"{path}: cannot be read as CSV text ({exc}); save it as CSV in UTF-8")


def target_column(path: Path, header: list[str], target: str) -> int:
    """The index of `target` in `header`; DatasetError naming the columns there are."""
    if target not in header:
        raise DatasetError(f"{path}: no target column {target!r}; columns: {', '.join(header)}; "
                           "name one of them after the last colon, as csv:FILE.csv:COLUMN or "
                           "parquet:FILE.parquet:COLUMN")
    return header.index(target)
