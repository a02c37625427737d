"""Tables in the published layouts of Titanic, Adult and the credit-card fraud set, written by pandas
and pyarrow, read through the product's loader: the columns' kinds, the encoding fitted on each
seed's training rows only, its record and facts, and a model that finds the fraud table's rare class."""

import json

import numpy as np
import pandas as pd
import pytest

from researcher.evaluate_cmd import reference_model
from shared.data.catalog import check_files
from shared.data.datasets import load_dataset, split, with_test_split
from shared.errors import DatasetError, OutsideDataDirError
from shared.evaluation.quick_eval import QuickEvalConfig, quick_evaluate_once
from tests.table_files import adult, fraud, titanic, write


def kinds(ds) -> dict[str, str]:
    return {c.name: c.kind for c in ds.facts().columns}


def test_titanic_columns_are_typed_and_the_identifiers_and_free_text_dropped(tmp_path):
    write(titanic(), tmp_path / "train.csv")
    ds = load_dataset("csv:train.csv:Survived", data_dir=tmp_path)
    assert kinds(ds) == {"PassengerId": "dropped", "Pclass": "numeric", "Name": "dropped", "Sex": "category",
                         "Age": "numeric", "SibSp": "numeric", "Parch": "numeric", "Ticket": "dropped",
                         "Fare": "numeric", "Cabin": "dropped", "Embarked": "category"}
    notes = {c.name: c.note for c in ds.facts().columns}
    assert "identifier" in notes["PassengerId"] and "too varied" in notes["Ticket"]
    age = next(c for c in ds.facts().columns if c.name == "Age")
    assert age.missing == titanic()["Age"].isna().sum() and age.width == 2  # the value and its missing indicator
    # Pclass, Age+indicator, SibSp, Parch, Fare; Sex: 2 + other; Embarked: 3 + other + missing
    assert ds.input_shape == (6 + 3 + 5,) and ds.class_names == ("0", "1")
    assert ds.facts().columns_summary().startswith(  # as the report and the planning LLM show it
        "11 columns -> 14 features; 5 numeric: Pclass, Age (blanks), SibSp, Parch, Fare; 2 categories: Sex, "
        "Embarked (blanks); 4 dropped: PassengerId, Name, Ticket, Cabin")


def test_adult_question_marks_are_blanks_and_test_labels_lose_their_dot(tmp_path):
    write(adult(), tmp_path / "adult.csv")
    ds = load_dataset("csv:adult.csv:income", data_dir=tmp_path)
    facts = {c.name: c for c in ds.facts().columns}
    assert facts["workclass"].kind == "category" and facts["workclass"].missing == (adult()["workclass"] == "?").sum()
    assert facts["fnlwgt"].kind == "numeric" and facts["native-country"].distinct == 7  # "?" is no country
    assert ds.class_names == ("<=50K", ">50K") and ds.facts().notes == []
    write(adult(dotted=True), tmp_path / "adult-test.csv")
    dotted = load_dataset("csv:adult-test.csv:income", data_dir=tmp_path)
    assert dotted.class_names == ("<=50K", ">50K") and np.array_equal(dotted.y, ds.y)
    assert "a trailing '.' removed from 400 values (<=50K., >50K.)" in dotted.facts().notes[0]


def test_uci_adult_spacing_and_question_marks(tmp_path):
    """UCI's files separate cells with ", " and mark a blank " ?"."""
    (tmp_path / "adult.data").write_text("age,workclass,income\n" + "".join(
        f"{20 + i}, {'?' if i % 5 == 0 else ['Private', 'State-gov'][i % 2]}, {'>50K' if i % 3 else '<=50K'}\n"
        for i in range(40)))
    ds = load_dataset("csv:adult.data:income", data_dir=tmp_path)
    work = next(c for c in ds.facts().columns if c.name == "workclass")
    assert (work.kind, work.distinct, work.missing) == ("category", 2, 8)


def test_the_width_is_fixed_and_every_statistic_comes_from_the_training_rows(tmp_path):
    frame = titanic()
    frame.loc[frame.index[-3:], "Embarked"] = "X"  # a port of three rows only
    write(frame, tmp_path / "train.csv")
    ds = with_test_split(load_dataset("csv:train.csv:Survived", data_dir=tmp_path))
    widths, medians = set(), set()
    for seed in range(4):
        s = split(ds, seed)
        widths.add((s.x_train.shape[1], s.x_val.shape[1], s.prepare(ds.x_test).shape[1]))
        age = next(e for e in s.encoding["columns"] if e["name"] == "Age")
        assert age["median"] == pd.to_numeric(pd.Series(_raw_train(ds, seed)[:, AGE])).median()
        medians.add(age["median"])
    assert widths == {(ds.input_shape[0],) * 3} and len(medians) > 1  # each seed's own training rows

    without_x = ds.x[ds.x[:, EMBARKED] != "X"]  # training rows that never saw the port
    fitted = ds.encoder.fit(without_x, None)
    embarked = fitted.record()["columns"][-1]
    assert embarked["name"] == "Embarked" and embarked["slots"] == 4 and "X" not in embarked["categories"]
    encoded = fitted.transform(frame.drop(columns="Survived").tail(3).to_numpy(object))  # the three X rows
    other = ds.input_shape[0] - 2  # Embarked comes last: its 4 slots, "other", "missing"
    assert (encoded[:, other] == 1).all() and (encoded[:, other - 4:other] == 0).all()


AGE, EMBARKED = 4, 10  # their positions in Titanic's raw rows (the file's columns without Survived)


def _raw_train(ds, seed):
    """The raw training rows of `seed`'s split, drawn as split() draws them."""
    from sklearn.model_selection import train_test_split
    x_train, _, _, _ = train_test_split(ds.x, ds.y, test_size=0.2, stratify=ds.y, random_state=seed)
    return x_train


def test_the_record_says_what_was_fitted_and_the_facts_what_each_column_became(tmp_path):
    write(adult(), tmp_path / "adult.csv")
    ds = with_test_split(load_dataset("csv:adult.csv:income", data_dir=tmp_path))
    record = split(ds, 0).encoding
    json.dumps(record)  # JSON, as it travels in every seed's result
    assert record["kind"] == "table" and record["inputs"][:3] == ["age", "workclass", "fnlwgt"]
    gender = next(e for e in record["columns"] if e["name"] == "gender")
    assert sorted(gender["categories"]) == ["Female", "Male"] and gender["slots"] == 2 and not gender["missing_slot"]
    assert sum(c.width for c in ds.facts().columns) == ds.input_shape[0] == record["width"]


def test_parquet_and_csv_give_the_same_encoding(tmp_path):
    write(titanic(), tmp_path / "t.csv")
    write(titanic(), tmp_path / "t.parquet")
    check_files("parquet:t.parquet:Survived", tmp_path)
    from_csv = with_test_split(load_dataset("csv:t.csv:Survived", data_dir=tmp_path))
    from_parquet = with_test_split(load_dataset("parquet:t.parquet:Survived", data_dir=tmp_path))
    assert from_csv.facts().columns == from_parquet.facts().columns
    a, b = split(from_csv, 1), split(from_parquet, 1)
    assert a.encoding == b.encoding and np.allclose(a.x_train, b.x_train)


def test_the_fraud_tables_rare_class_survives_every_split_and_a_small_mlp_finds_it(tmp_path):
    write(fraud(), tmp_path / "creditcard.csv")
    ds = with_test_split(load_dataset("csv:creditcard.csv:Class", data_dir=tmp_path))
    assert ds.x.dtype == np.float32 and ds.input_shape == (30,) and ds.y_test.sum() == 8
    for seed in range(3):
        s = split(ds, seed)
        assert s.y_train.sum() + s.y_val.sum() == 32 and s.y_val.sum() >= 6  # stratified: a fifth in validation
    write(fraud(rows=6000, positives=30), tmp_path / "small.csv")  # 0.5%: enough positives for one validation
    config = QuickEvalConfig(dataset_name="csv:small.csv:Class", epochs=2, num_seeds=1, data_dir=str(tmp_path),
                             metrics_to_track=("val_pr_auc",), track_learning_curves=False)
    result = quick_evaluate_once(reference_model((30,), 2), config)
    assert result["aggregated"]["val_pr_auc"]["mean"] > 0.3  # chance: 0.005, the positives' share


def test_a_tables_bad_input_is_named(tmp_path):
    write(titanic(), tmp_path / "t.parquet")
    with pytest.raises(DatasetError, match="no target column 'survived'; columns: PassengerId, Survived"):
        check_files("parquet:t.parquet:survived", tmp_path)
    with pytest.raises(DatasetError, match="a Parquet file, not CSV text; name it parquet:PATH:TARGET"):
        check_files("csv:t.parquet:Survived", tmp_path)
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="cannot be read as a Parquet file"):
        check_files("parquet:t.csv:b", tmp_path)
    with pytest.raises(DatasetError, match="cannot be read as a Parquet file"):
        load_dataset("parquet:t.csv:b", data_dir=tmp_path)
    write(titanic(), tmp_path.parent / "outside.parquet")
    with pytest.raises(OutsideDataDirError):
        check_files(f"parquet:{tmp_path.parent / 'outside.parquet'}:Survived", tmp_path)
    write(pd.DataFrame({"a": [None, None], "kind": [None, None]}, dtype=object), tmp_path / "blank.parquet")
    with pytest.raises(DatasetError, match="every row's target 'kind' is blank"):
        load_dataset("parquet:blank.parquet:kind", data_dir=tmp_path)


def test_too_many_classes_are_refused(tmp_path):
    write(pd.DataFrame({"a": np.arange(1500) % 7, "id": np.arange(1500)}), tmp_path / "ids.csv")
    with pytest.raises(DatasetError, match="the target 'id' has 1500 distinct values, more than 1000 classes"):
        load_dataset("csv:ids.csv:id", data_dir=tmp_path)



def test_an_exported_tables_model_encodes_raw_rows_as_its_seed_did(tmp_path):
    """researcher.load's BestModel applies the recorded encoding (JSON, as preprocessing.json keeps it)
    to a DataFrame of new raw rows: the same inputs as the seed's own Split.prepare gives."""
    import torch

    from researcher.load import BestModel

    frame = titanic()
    write(frame, tmp_path / "train.csv")
    ds = with_test_split(load_dataset("csv:train.csv:Survived", data_dir=tmp_path))
    s = split(ds, 0)
    model = torch.nn.Linear(ds.input_shape[0], 2)
    best = BestModel(model=model, seed=0, class_names=list(ds.class_names), input_shape=list(ds.input_shape),
                     mean=s.mean, std=s.std, encoding=json.loads(json.dumps(s.encoding)))
    rows = pd.read_csv(tmp_path / "train.csv").tail(20)  # with its target column, which is ignored
    expected = s.prepare(rows.drop(columns="Survived").to_numpy(object))
    assert np.allclose(best.prepare(rows).numpy(), expected, atol=1e-5)
    assert len(best.predict(rows)) == 20
    with pytest.raises(ValueError, match="rows lack the columns Sex"):
        best.prepare(rows.drop(columns="Sex"))
    with pytest.raises(ValueError, match="pass the raw rows as a pandas DataFrame"):
        best.prepare(np.zeros((2, ds.input_shape[0])))
