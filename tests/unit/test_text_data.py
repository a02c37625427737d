"""hf: text data sets read offline from the copies the `datasets` library itself writes:
save_to_disk folders, the Hub's data files in its layouts, the hub cache and the Arrow files
datasets prepares; column roles given or inferred; the official splits; bad input."""

import shutil
import socket

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from shared.data.catalog import check_files, check_goal, dataset_key, known_datasets, parse_hf_name
from shared.data.datasets import load_dataset, split, with_test_split
from shared.errors import DatasetError, DatasetNotFoundError, OutsideDataDirError
from shared.messaging.messages import Goal
from shared.runtime.config import DataConfig

SMALL = DataConfig(vocab_size=200, max_length=24)
SENTIMENT = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
PAIR = Features({"idx": Value("int32"), "question": Value("string"), "sentence": Value("string"),
                 "label": ClassLabel(names=["entailment", "not_entailment"])})


def reviews(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    words = {0: ["bad", "awful", "dull", "poor"], 1: ["good", "great", "fine", "lovely"]}
    y = (np.arange(n) % 2).tolist()
    return {"text": [" ".join(rng.choice(words[c], 4)) + " film" for c in y], "label": y}


def qnli(n: int, labelled: bool = True) -> dict:
    y = [(i % 2) if labelled else -1 for i in range(n)]
    return {"idx": list(range(n)), "question": [f"what is item {i}?" for i in range(n)],
            "sentence": [f"item {i} is {'a thing' if i % 2 == 0 else 'not known'}." for i in range(n)], "label": y}


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A data directory, and no Hugging Face cache of the user's that could answer instead."""
    for key in ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "data"
    root.mkdir()
    return root


def load(name: str, root, config: DataConfig = SMALL):
    return load_dataset(name, data_dir=root, config=config)


# ---- names ----
def test_names_with_column_roles_have_one_canonical_key():
    assert dataset_key("HF:glue/qnli?label=label&text=question,sentence") == "hf:glue/qnli?text=question,sentence&label=label"
    assert parse_hf_name("hf:glue/qnli?text=question,sentence").text == ("question", "sentence")
    assert dataset_key(" hf:stanfordnlp/imdb ") == "hf:stanfordnlp/imdb"
    assert "hf:NAME" in known_datasets()
    for bad, says in [("hf:", "names no data set"), ("hf:x?txt=a", "'txt'"), ("hf:x?text=a,b,c", "3 columns"),
                      ("hf:x?label=", "not a column role")]:
        with pytest.raises(DatasetError, match=says) as caught:
            dataset_key(bad)
        assert "text=COLUMN" in str(caught.value)


# ---- the formats ----
def test_a_save_to_disk_dataset_dict_with_its_official_test_split(data):
    DatasetDict(train=Dataset.from_dict(reviews(60), features=SENTIMENT),
                test=Dataset.from_dict(reviews(20, 1), features=SENTIMENT)).save_to_disk(str(data / "imdb"))
    check_files(dataset_key("hf:stanfordnlp/imdb"), data)  # saved as DATA_DIR/NAME, found by the Hub name
    ds = with_test_split(load("hf:stanfordnlp/imdb", data))
    assert ds.kind == "text" and ds.x.dtype == object and ds.x.shape == (60,) and ds.y.dtype == np.int64
    assert ds.class_names == ("neg", "pos") and ds.test_source == "official" and len(ds.y_test) == 20
    assert ds.input_shape == (8,) and ds.x[0].endswith("film")  # the longest (7) rounded up to 8, within max_length 24
    facts = ds.facts()
    assert facts.kind == "text" and facts.input_dtype == "int64" and facts.input_shape == [8]
    assert facts.text.text_columns == ["text"] and 4 + 9 <= facts.text.vocab_size < 200 and not facts.text.pair
    assert facts.text.longest == 7 and facts.text.truncated_share == 0.0  # [CLS] 4 words film [SEP]


def test_a_single_saved_dataset_holds_out_a_stratified_test_split(data):
    Dataset.from_dict(reviews(50), features=SENTIMENT).save_to_disk(str(data / "mine"))
    ds = with_test_split(load("hf:mine", data))
    assert ds.test_source == "held_out" and len(ds.y) + len(ds.y_test) == 50


@pytest.mark.parametrize("layout", ["train-00000-of-00001.parquet", "data/train-00000-of-00001.parquet",
                                    "plain_text/train-00000-of-00001.parquet", "train.jsonl", "train.csv"])
def test_the_hubs_data_file_layouts(data, layout):
    folder = data / "ag_news"
    (folder / layout).parent.mkdir(parents=True, exist_ok=True)
    test = layout.replace("train", "test")
    for name, rows in ((layout, reviews(40)), (test, reviews(10, 1))):
        part = Dataset.from_dict(rows, features=SENTIMENT)
        {"parquet": part.to_parquet, "jsonl": part.to_json, "csv": part.to_csv}[name.split(".")[-1]](str(folder / name))
    ds = with_test_split(load("hf:ag_news", data))
    assert len(ds.y) == 40 and len(ds.y_test) == 10 and ds.test_source == "official"
    # Parquet keeps the ClassLabel; JSON lines and CSV hold the indices, whose values are the classes
    assert ds.class_names == (("neg", "pos") if layout.endswith("parquet") else ("0", "1"))


def test_string_labels_become_classes_in_order(data):
    rows = reviews(30)
    rows["sentiment"] = ["positive" if v else "negative" for v in rows.pop("label")]
    (data / "s").mkdir()
    Dataset.from_dict(rows).to_json(str(data / "s" / "train.jsonl"))
    ds = load("hf:s", data)
    assert ds.class_names == ("negative", "positive") and ds.y[:2].tolist() == [0, 1]


def test_the_hub_cache_snapshot_and_the_arrow_files_datasets_prepared(data, monkeypatch, tmp_path):
    """Both layouts a Hugging Face cache holds: the hub's snapshot of the repository (data files),
    and datasets' own prepared Arrow files, which datasets.load_dataset(NAME) itself reads offline."""
    snapshot = data / "huggingface" / "hub" / "datasets--someone--tiny" / "snapshots" / ("ab" * 20)
    (snapshot / "plain_text").mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("ab" * 20)
    Dataset.from_dict(reviews(30), features=SENTIMENT).to_parquet(str(snapshot / "plain_text" / "train-00000-of-00001.parquet"))
    assert len(load("hf:someone/tiny", data).y) == 30
    assert len(load("hf:tiny", data).y) == 30  # an owner-less name finds any owner's

    from datasets.packaged_modules.parquet.parquet import Parquet
    scratch = tmp_path / "scratch"
    Parquet(cache_dir=str(scratch), dataset_name="other", config_name="plain_text",
            data_files={"train": str(snapshot / "plain_text" / "train-00000-of-00001.parquet")}).download_and_prepare()
    cache = tmp_path / "hf_home" / "datasets"
    prepared = cache / "someone___other" / "plain_text" / "0.0.0" / "abc123"
    shutil.copytree(next(scratch.glob("other/plain_text*/0.0.0")), prepared)
    import datasets
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    assert len(datasets.load_dataset("someone/other", cache_dir=str(cache))["train"]) == 30  # datasets' own reading
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    ds = load("hf:someone/other", data)
    assert len(ds.y) == 30 and ds.class_names == ("neg", "pos")


def test_nothing_reaches_for_the_network(data, monkeypatch):
    DatasetDict(train=Dataset.from_dict(reviews(30), features=SENTIMENT)).save_to_disk(str(data / "a"))
    (data / "b").mkdir()
    Dataset.from_dict(reviews(30), features=SENTIMENT).to_parquet(str(data / "b" / "train.parquet"))
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("the test allows no connection")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for name in ("hf:a", "hf:b"):
        assert len(load(name, data).y) == 30
    with pytest.raises(DatasetNotFoundError):
        load("hf:not_here", data)
    assert attempts == []


# ---- the splits and column roles of a sentence-pair set ----
def test_a_pair_set_with_glues_unlabelled_test_split_tests_on_validation(data):
    DatasetDict(train=Dataset.from_dict(qnli(40), features=PAIR),
                validation=Dataset.from_dict(qnli(12), features=PAIR),
                test=Dataset.from_dict(qnli(12, labelled=False), features=PAIR)).save_to_disk(str(data / "glue" / "qnli"))
    ds = with_test_split(load("hf:glue/qnli", data))
    assert ds.x.shape == (40, 2) and ds.x[0, 0] == "what is item 0?" and ds.x[0, 1] == "item 0 is a thing."
    assert len(ds.y_test) == 12 and ds.test_source == "official"
    assert "'test' is unlabelled" in ds.test_note and "validation split 'validation'" in ds.test_note
    facts = ds.facts()
    assert facts.text.pair and facts.text.text_columns == ["question", "sentence"]
    assert facts.test_note == ds.test_note
    assert "splits not used: test (the pool is 'train'; the test split 'validation')" in facts.notes[0]
    ids = split(ds, 0).x_train
    assert ((ids == 3).sum(axis=1) == 2).all()  # [SEP] after each of the two segments


def test_column_roles_given_in_the_name_override_the_inferred_ones(data):
    Dataset.from_dict(qnli(30), features=PAIR).save_to_disk(str(data / "q"))
    ds = load("hf:q?text=sentence", data)
    assert ds.x.shape == (30,) and ds.facts().text.text_columns == ["sentence"]


@pytest.mark.parametrize("rows, name, says", [
    ({"a": ["x y"] * 10, "b": ["z w"] * 10, "label": [0, 1] * 5}, "hf:amb", r"2 string columns \(a, b\)"),
    ({"text": ["x y"] * 10, "score": [0, 1] * 5}, "hf:amb", "no label column"),
    ({"text": ["x y"] * 10, "label": [0, 1] * 5}, "hf:amb?text=body", "no column 'body'"),
    ({"text": ["x y"] * 10, "label": [0, 1] * 5}, "hf:amb?text=label&label=label", "both the text and the label"),
    ({"text": ["x y"] * 10, "label": [0, 1] * 5}, "hf:amb?label=text", "no string column besides the label 'text'"),
    ({"a": ["x y"] * 10, "b": ["z"] * 10, "score": [0.5, 4.25] * 5}, "hf:amb?text=a,b&label=score",
     "not whole numbers: a regression target"),
])
def test_columns_that_cannot_be_told_are_named_with_the_syntax(data, rows, name, says):
    Dataset.from_dict(rows).save_to_disk(str(data / "amb"))
    with pytest.raises(DatasetError, match=says) as caught:
        load(name, data)
    assert "its columns:" in str(caught.value) or "regression" in says
    if "no column" not in says:
        assert "hf:NAME?text=COLUMN[,COLUMN2]&label=COLUMN" in str(caught.value)


# ---- where it looked, and what is refused ----
def test_an_unknown_set_says_where_it_looked_and_how_to_get_it(data):
    with pytest.raises(DatasetNotFoundError) as caught:
        check_files(dataset_key("hf:stanfordnlp/imdb"), data)
    message = str(caught.value)
    assert str(data / "stanfordnlp" / "imdb") in message and str(data / "imdb") in message
    assert str(data / "huggingface" / "hub" / "datasets--stanfordnlp--imdb") in message
    assert str(data.parent / "home" / ".cache" / "huggingface" / "datasets" / "stanfordnlp___imdb") in message
    assert f"load_dataset('stanfordnlp/imdb').save_to_disk('{data / 'imdb'}')" in message
    problems = check_goal(Goal(run_id="r", goal="g", dataset="hf:stanfordnlp/imdb"), data, hint="set data.dir")
    assert problems and problems[0].endswith("; set data.dir")


@pytest.mark.parametrize("name", ["hf:../outside", "hf:/etc", "hf:sub/../../outside"])
def test_a_folder_outside_the_data_directory_is_refused(data, name):
    (data.parent / "outside").mkdir()
    Dataset.from_dict(reviews(10), features=SENTIMENT).save_to_disk(str(data.parent / "outside" / "x"))
    with pytest.raises(OutsideDataDirError, match="outside the data directory") as caught:
        check_files(dataset_key(name), data)
    assert "hf:FOLDER" in str(caught.value)


def test_a_name_that_is_no_hub_name_never_picks_a_cached_set(data, monkeypatch, tmp_path):
    """A glob pattern or a path in a name: only the data directory is looked in, never a cache."""
    snapshot = tmp_path / "hf_home" / "hub" / "datasets--someone--tiny" / "snapshots" / "rev"
    snapshot.mkdir(parents=True)
    Dataset.from_dict(reviews(10), features=SENTIMENT).to_parquet(str(snapshot / "train-00000-of-00001.parquet"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    assert len(load("hf:someone/tiny", data).y) == 10  # a Hub name finds it
    for name in ("hf:*", "hf:some*/tiny", "hf:someone/[t]iny"):
        with pytest.raises(DatasetError, match="not found") as caught:
            load(name, data)
        assert "hf_home" not in str(caught.value)


def test_a_folder_with_no_usable_split_and_a_corrupt_parquet_file(data):
    DatasetDict(unsupervised=Dataset.from_dict(reviews(10), features=SENTIMENT),
                other=Dataset.from_dict(reviews(10), features=SENTIMENT)).save_to_disk(str(data / "nosplit"))
    with pytest.raises(DatasetError, match="no training split among unsupervised, other"):
        load("hf:nosplit", data)
    (data / "broken").mkdir()
    (data / "broken" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DatasetError, match="cannot read it") as caught:
        load("hf:broken", data)
    assert str(data / "broken") in str(caught.value)


def test_the_text_settings_are_checked():
    for kwargs, says in [({"tokenizer": "sentencepiece"}, "data.tokenizer"), ({"vocab_size": 4}, "data.vocab_size"),
                         ({"tokenizer": "bpe", "vocab_size": 100}, "at least 300 with tokenizer bpe"),
                         ({"max_length": 2}, "data.max_length")]:
        with pytest.raises(ValueError, match=says):
            DataConfig(**kwargs)
    assert DataConfig(tokenizer="tok/tokenizer.json").tokenizer == "tok/tokenizer.json"  # a path is one


def test_the_check_at_submission_reads_the_columns(data):
    """A wrong column role is refused when the goal is submitted (before any stack starts), from a saved
    set's features or a Parquet file's schema, as loading it would refuse it."""
    Dataset.from_dict(reviews(10), features=SENTIMENT).save_to_disk(str(data / "saved"))
    (data / "files").mkdir()
    Dataset.from_dict(reviews(10), features=SENTIMENT).to_parquet(str(data / "files" / "train-00000-of-00001.parquet"))
    for folder in ("saved", "files"):
        check_files(dataset_key(f"hf:{folder}"), data)
        with pytest.raises(DatasetError, match="no column 'body'; its columns: text"):
            check_files(dataset_key(f"hf:{folder}?text=body"), data)
        with pytest.raises(DatasetError, match="cannot be both the text and the label"):
            check_files(dataset_key(f"hf:{folder}?text=label&label=label"), data)


def test_the_check_at_submission_reads_a_spreadsheets_csv_and_leaves_a_json_array_to_the_load(data):
    (data / "bom").mkdir()
    (data / "bom" / "train.csv").write_text("\ufefftext,label\nhello world,0\nbad thing,1\n", encoding="utf-8")
    check_files(dataset_key("hf:bom?text=text"), data)  # the byte-order mark is no part of the first column's name
    with pytest.raises(DatasetError, match="no column 'body'; its columns: text, label"):
        check_files(dataset_key("hf:bom?text=body"), data)
    (data / "arr").mkdir()
    (data / "arr" / "train.json").write_text('[{"text": "a", "label": 0}, {"text": "b", "label": 1}]')
    check_files(dataset_key("hf:arr?text=text"), data)  # one JSON array: its columns are known once it is read
