"""The checks that read no data (shared.data.files, catalog.check_files): what the planner and
`researcher run` refuse before any work starts, and the same rule enforced by the loaders."""

import os

import pytest

from researcher.evaluate_cmd import quick_evaluator_main
from shared.data.catalog import check_files, check_goal, dataset_key
from shared.data.datasets import load_dataset
from shared.data.files import FILES, LOCAL_HINT, STACK_HINT
from shared.errors import (DatasetError, DatasetNotFoundError, DatasetUnavailableError, OutsideDataDirError,
                           UnknownDatasetError)
from shared.evaluation.in_container import evaluate_job
from shared.messaging.messages import EvalJob, Goal
from shared.runtime.config import DataConfig


def goal(dataset: str) -> Goal:
    return Goal(run_id="r1", goal="g", dataset=dataset)


def touch(root, name: str) -> None:
    path = root / name.removesuffix("[.gz]")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


# ---- torchvision's files ----
@pytest.mark.parametrize("key", sorted(FILES))
def test_a_missing_file_is_named_with_its_path(tmp_path, key):
    with pytest.raises(DatasetNotFoundError) as caught:
        check_files(key, tmp_path)
    first = FILES[key][0]
    assert str(tmp_path / first) in str(caught.value) and "download" in str(caught.value)
    for name in FILES[key][:-1]:
        touch(tmp_path, name)
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / FILES[key][-1]).replace("[", r"\[")):
        check_files(key, tmp_path)  # the last one still missing: only it is named


@pytest.mark.parametrize("key", sorted(FILES))
def test_the_loaders_open_exactly_the_files_the_check_finds(tmp_path, key):
    """Empty files where FILES says: the check passes and the loader gets past finding them, to
    reading them (a format error, never 'not found'), so the two cannot look in different places."""
    for name in FILES[key]:
        touch(tmp_path, name)
    check_files(key, tmp_path)
    with pytest.raises(DatasetError) as caught:
        load_dataset(key, data_dir=tmp_path)
    assert not isinstance(caught.value, DatasetNotFoundError), caught.value


def test_mnist_files_may_be_gzipped(tmp_path):
    for name in FILES["mnist"]:
        touch(tmp_path, name.replace("[.gz]", ".gz"))
    check_files("mnist", tmp_path)


def test_embedded_sets_need_no_files(tmp_path):
    for key in ("digits", "iris", "wine", "breast_cancer", "synthetic"):
        check_files(key, tmp_path / "absent")


# ---- CSV paths: relative to the data directory, or absolute inside it ----
@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "t.csv").write_text("a,b,kind\n1,2,x\n3,4,y\n")
    (tmp_path / "secret.csv").write_text("a,kind\n1,x\n2,y\n")
    return root


@pytest.mark.parametrize("spec", ["csv:sub/t.csv:kind", "csv:./sub/../sub/t.csv:kind", "csv:{root}/sub/t.csv:kind"])
def test_a_csv_inside_the_data_directory_passes(data, spec):
    check_files(dataset_key(spec.format(root=data)), data)


@pytest.mark.parametrize("spec", ["csv:../secret.csv:kind", "csv:{root}/../secret.csv:kind", "csv:/etc/hostname:kind",
                                  "csv:sub/../../secret.csv:kind"])
def test_a_csv_outside_the_data_directory_is_refused_saying_what_to_do(data, spec):
    with pytest.raises(OutsideDataDirError) as caught:
        check_files(dataset_key(spec.format(root=data)), data)
    message = str(caught.value)
    assert f"outside the data directory {data}" in message and f"put it in {data}" in message
    assert "csv:FILE.csv:TARGET" in message


def test_a_symlink_out_of_the_data_directory_is_refused_and_one_within_it_followed(data):
    os.symlink(data.parent / "secret.csv", data / "escape.csv")
    os.symlink(data / "sub" / "t.csv", data / "alias.csv")
    with pytest.raises(OutsideDataDirError, match="resolves to"):
        check_files("csv:escape.csv:kind", data)
    with pytest.raises(OutsideDataDirError):
        load_dataset("csv:escape.csv:kind", data_dir=data)  # the loader, as an evaluator runs it
    check_files("csv:alias.csv:kind", data)
    assert load_dataset("csv:alias.csv:kind", data_dir=data).class_names == ("x", "y")


def test_a_missing_csv_says_where_it_was_looked_for(data):
    with pytest.raises(DatasetNotFoundError, match=f"expected {data / 'nope.csv'}"):
        check_files("csv:nope.csv:kind", data)
    with pytest.raises(DatasetNotFoundError):
        check_files("csv:sub:kind", data)  # a folder is not a CSV file


def test_the_header_is_checked_and_nothing_past_it(data):
    (data / "body.csv").write_text("a,kind\nnot,a,valid,row\n")
    check_files("csv:body.csv:kind", data)  # the body is the loader's to judge
    with pytest.raises(DatasetError, match="no target column 'label'; columns: a, b, kind"):
        check_files("csv:sub/t.csv:label", data)


@pytest.mark.parametrize("content, says", [
    (b"", "needs a header row"),
    (b"\n \n", "needs a header row"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00", "cannot be read as CSV text"),
])
def test_an_unreadable_header_is_named(data, content, says):
    (data / "bad.csv").write_bytes(content)
    with pytest.raises(DatasetError, match=says):
        check_files("csv:bad.csv:kind", data)


def test_only_a_trusted_loader_reads_a_csv_anywhere(data):
    outside = data.parent / "secret.csv"
    assert load_dataset(f"csv:{outside}:kind", data_dir=data, any_csv_path=True).class_names == ("x", "y")
    with pytest.raises(OutsideDataDirError):  # the cached copy is never handed to a confined load
        load_dataset(f"csv:{outside}:kind", data_dir=data)


def test_an_evaluator_refuses_a_job_naming_a_host_file(data):
    """A job comes over NATS: its data set is refused before any container is asked for (no runner)."""
    job = EvalJob(job_id="j", run_id="r", iteration=0, seed=0, dataset="csv:/etc/hostname:x", class_name="M", source="")
    with pytest.raises(DatasetUnavailableError, match="outside the data directory"):
        evaluate_job(job, None, timeout_s=1, memory="1g", data_config=DataConfig(dir=str(data)))


# ---- what a goal is told ----
def test_check_goal_appends_the_hint_where_the_data_directory_is_the_fix(data):
    missing = check_goal(goal("cifar10"), data, STACK_HINT)
    assert len(missing) == 1 and missing[0].startswith("dataset: data set 'cifar10' not found")
    assert missing[0].endswith(STACK_HINT) and "./data" in STACK_HINT and "RESEARCHER_DATA_DIR" in STACK_HINT
    assert check_goal(goal("csv:/etc/hostname:x"), data, LOCAL_HINT)[0].endswith(LOCAL_HINT)
    bad_target = check_goal(goal("csv:sub/t.csv:label"), data, STACK_HINT)[0]
    assert "no target column" in bad_target and STACK_HINT not in bad_target  # fixed in the file, not the setting
    assert check_goal(goal("cifar10")) == []  # no data directory given: the name alone is checked


@pytest.mark.parametrize("typed, meant", [("cifar11", "cifar10"), ("minst", "mnist"), ("fashion-mnst", "fashion_mnist"),
                                          ("Cifar-1000", "cifar100")])
def test_a_mistyped_name_suggests_the_closest(typed, meant):
    with pytest.raises(UnknownDatasetError) as caught:
        dataset_key(typed)
    assert caught.value.suggestion == meant
    assert f"unknown data set {typed!r}; did you mean {meant}? known: breast_cancer, cifar10" in str(caught.value)


def test_a_name_like_nothing_suggests_nothing():
    with pytest.raises(UnknownDatasetError) as caught:
        dataset_key("imagenet-21k")
    assert caught.value.suggestion == "" and str(caught.value).startswith("unknown data set 'imagenet-21k'; known: ")


def test_quick_evaluator_names_its_own_flags_for_a_missing_set(tmp_path, capsys):
    assert quick_evaluator_main(["--dataset", "svhn", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --dataset: data set 'svhn' not found") and str(tmp_path / "train_32x32.mat") in err
    assert "--data-dir DIR" in err and "--download" in err and "download_missing" not in err


def test_an_upper_case_csv_prefix_is_checked_as_csv(tmp_path):
    """`CSV:` names the same kind of data set as `csv:`: the path rule holds for it too."""
    outside = check_goal(Goal(run_id="r", goal="g", dataset="CSV:/etc/hostname:x"), str(tmp_path), "")
    assert len(outside) == 1 and "lies outside the data directory" in outside[0]
    (tmp_path / "t.csv").write_text("a,y\n1,0\n2,1\n")
    assert dataset_key("CSV:t.csv:y") == "csv:t.csv:y"
