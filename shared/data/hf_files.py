"""Where an `hf:` data set's local copy lies, found without reading it and without the network:
the submission check (catalog.check_files) and the loader (shared.data.text) both call `locate`,
so they cannot disagree. No numpy, no `datasets`: the CLI imports this.

Looked for in this order, the first found wins:
1. under the data directory, as named (`hf:my_folder`, `hf:glue/sst2` -> DATA_DIR/glue/sst2) or by its
   last part (`hf:stanfordnlp/imdb` -> DATA_DIR/imdb): a folder written by `save_to_disk` (a Dataset or a
   DatasetDict), or a folder of the Hub's data files (Parquet, JSON lines, CSV) in the Hub's layouts;
2. a Hugging Face cache: DATA_DIR/huggingface, then $HF_HOME (or $HF_HUB_CACHE, $HF_DATASETS_CACHE),
   then ~/.cache/huggingface. In each, the hub cache's snapshot of the data set's repository
   (hub/datasets--OWNER--NAME/snapshots/REVISION: its data files), then the Arrow files that
   `datasets.load_dataset(NAME)` prepared there (datasets/OWNER___NAME/CONFIG/VERSION/HASH), which is
   what it reads itself when offline.
A name that is a path (absolute, or with `..`) must resolve inside the data directory: a goal
arrives over NATS from any client and must never make a service read an arbitrary folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, NamedTuple

from shared.errors import DatasetError, DatasetNotFoundError, OutsideDataDirError

DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".jsonl.gz", ".json.gz", ".csv.gz")
HUB_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # one part of a Hub name (OWNER, NAME, CONFIG)
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes: a DatasetDict's, a Dataset's


class Location(NamedTuple):
    kind: Literal["saved", "files", "arrow"]  # save_to_disk's folder; data files; datasets' prepared Arrow files
    path: Path
    config: str = ""  # the configuration (glue's sst2): a subfolder of data files, or of the prepared cache


def locate(name: str, root: Path) -> Location:
    """The local copy of the hf: data set `name` (HfName.path) for the data directory `root`;
    DatasetNotFoundError naming every place looked and how to get the set, OutsideDataDirError for
    a path that leaves `root`."""
    looked: list[str] = []
    for folder, config in _local_candidates(name, root):
        looked.append(str(folder))
        found = _folder(folder, config)
        if found:
            return found
    owner, repo, config = _repo(name)
    # the caches only for a Hub name (letters, digits, . _ -; no glob pattern, no "..", no path): a goal
    # comes from anyone, and must not pick an arbitrary cached set or reach outside a cache's folder
    hub_name = all(HUB_PART.fullmatch(part) and part.strip(".") for part in name.split("/"))
    for cache in _caches(root) if hub_name else ():
        found = _snapshot(cache, owner, repo, config, looked) or _prepared(cache, owner, repo, config, looked)
        if found:
            return found
    hub = f"{owner}/{repo}" if owner else repo
    args = f"{hub!r}" + (f", {config!r}" if config else "")
    # OWNER/NAME or NAME/CONFIG: the user knows which
    other = (f" (or load_dataset({owner!r}, {repo!r}) where {repo} is a configuration of {owner})"
             if owner and not config else "")
    target = root / name.split("/")[-1] if not Path(name).is_absolute() else Path(name)
    places = ", ".join(looked[:8] + (["..."] if len(looked) > 8 else []))
    raise DatasetNotFoundError(f"hf:{name}", [f"a copy in one of {places}"], (
        "nothing is downloaded unless asked: on a machine with internet run "
        f"`python -c \"import datasets; datasets.load_dataset({args}).save_to_disk('{target}')\"`{other} and copy the folder "
        f"here, or put the Hub's data files (e.g. train-00000-of-00001.parquet) in {target}/, "
        "or set HF_HOME to a Hugging Face cache that holds it"))


def _local_candidates(name: str, root: Path) -> list[tuple[Path, str]]:
    given = Path(name).expanduser()
    path = (root / given).resolve()  # an absolute name replaces root
    if not path.is_relative_to(root.resolve()):
        raise OutsideDataDirError(name, str(root), str(path), what="Hugging Face data set folder",
                                  example="hf:FOLDER")
    if given.is_absolute() or ".." in given.parts or len(given.parts) != 2:
        return [(path, "")]
    # OWNER/NAME saved as DATA_DIR/NAME too (a symlink out of the data directory is not followed)
    last = (root / given.parts[1]).resolve()
    return [(path, "")] + ([(last, "")] if last.is_relative_to(root.resolve()) else [])


def _folder(folder: Path, config: str) -> Location | None:
    if config:
        return _folder(folder / config, "")
    if not folder.is_dir():
        return None
    if any((folder / marker).is_file() for marker in SAVED_MARKERS):
        return Location("saved", folder)
    if has_data_files(folder):
        return Location("files", folder)
    return None


def has_data_files(folder: Path) -> bool:
    """Whether `folder` holds a data file of the Hub's formats, at most three levels down (the Hub's
    layouts: train.jsonl, data/train-*.parquet, plain_text/train-*.parquet, CONFIG/data/...)."""
    for depth in ("*", "*/*", "*/*/*"):
        if any(p.name.endswith(DATA_SUFFIXES) and p.is_file() for p in folder.glob(depth)):
            return True
    return False


def _repo(name: str) -> tuple[str, str, str]:
    """(owner, repository, configuration) a Hub name may mean: OWNER/NAME, or NAME/CONFIG for the
    canonical sets without an owner (glue/sst2). Which it is shows in the cache: both are tried."""
    parts = name.split("/")
    if len(parts) == 1:
        return "", parts[0], ""
    return parts[0], parts[1], "/".join(parts[2:])


def _caches(root: Path) -> list[Path]:
    """Hugging Face cache roots, the data directory's own first (a path relative to it a service can read)."""
    env = [os.environ.get(k) for k in ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE")]
    out = [root / "huggingface", *[Path(v).expanduser() for v in env if v], Path("~/.cache/huggingface").expanduser()]
    return list(dict.fromkeys(out))  # each named where it looked, even where it is not there


def _repo_dirs(base: Path, owner: str, repo: str, config: str, sep: str, prefix: str) -> list[tuple[Path, str]]:
    """Cache folders of the repository (OWNER--NAME in the hub cache, OWNER___NAME in datasets' own),
    with the configuration each reading implies; an owner-less name matches any owner's NAME."""
    if not base.is_dir():
        return []
    tries = [(f"{prefix}{owner}{sep}{repo}", config)] if owner else [(f"{prefix}{repo}", config)]
    if owner:  # NAME/CONFIG (glue/sst2), under its own name or any owner's (nyu-mll/glue)
        tries += [(f"{prefix}{owner}", "/".join(filter(None, [repo, config])))]
        tries += [(p.name, "/".join(filter(None, [repo, config]))) for p in sorted(base.glob(f"{prefix}*{sep}{owner}"))]
    else:
        tries += [(p.name, config) for p in sorted(base.glob(f"{prefix}*{sep}{repo}"))]
    return [(base / folder, cfg) for folder, cfg in dict.fromkeys(tries) if (base / folder).is_dir()]


def _snapshot(cache: Path, owner: str, repo: str, config: str, looked: list[str]) -> Location | None:
    hub = cache if cache.name == "hub" else cache / "hub"
    looked.append(str(hub / (f"datasets--{owner}--{repo}" if owner else f"datasets--{repo}")))
    for folder, cfg in _repo_dirs(hub, owner, repo, config, "--", "datasets--"):
        ref = folder / "refs" / "main"
        snapshots = sorted((folder / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
        chosen = folder / "snapshots" / ref.read_text().strip() if ref.is_file() else (snapshots or [None])[0]
        if chosen is not None and chosen.is_dir():
            found = _folder(chosen, cfg)
            if found:
                return found
            if cfg and has_data_files(chosen):  # CONFIG/ holds no files here: datasets' own config names them
                return Location("files", chosen, cfg)
    return None


def _prepared(cache: Path, owner: str, repo: str, config: str, looked: list[str]) -> Location | None:
    base = cache if cache.name == "datasets" else cache / "datasets"
    looked.append(str(base / (f"{owner}___{repo}" if owner else repo)))
    for folder, cfg in _repo_dirs(base, owner, repo, config, "___", ""):
        configs = [folder / cfg] if cfg else sorted(p for p in folder.iterdir() if p.is_dir())
        if not cfg and len(configs) > 1:
            names = ", ".join(p.name for p in configs)
            raise DatasetError(f"{folder} holds configurations {names}; name one, as hf:{repo}/CONFIG "
                               f"(e.g. hf:{repo}/{configs[0].name})")
        # CONFIG/VERSION/HASH: the newest prepared one, as datasets itself takes when offline
        prepared = [p for c in configs for p in c.glob("*/*") if p.is_dir() and any(p.glob("*.arrow"))]
        if prepared:
            return Location("arrow", max(prepared, key=lambda p: p.stat().st_mtime), cfg or configs[0].name)
    return None
