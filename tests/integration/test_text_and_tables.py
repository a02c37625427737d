"""The whole loop on the new kinds of data, three goals on one real stack at once: a text set (a
`datasets` save_to_disk folder), a sentence-pair set (Parquet files in the Hub's layout, its test
split unlabelled as GLUE's) and a table with categories and blanks (a CSV in Kaggle's Titanic
layout). Each is planned by the built-in search, validated in the sandbox and trained in locked-down
containers on encoded inputs (token ids, one-hot and imputed features), fitted per seed on its
training split, its best candidate tested on the held-out test split. Real nats-server, real
services as processes, real Docker."""

from __future__ import annotations

import asyncio

import pytest

from datasets import load_from_disk

from benchmarks.sample_data import write_paraphrase, write_reviews
from researcher.load import load_best
from researcher.stack import LocalStack
from shared.registry.report import export_run, load_report
from tests.integration.test_end_to_end import _wait_terminal
from tests.integration.test_resilience import FAST, goal, start_run
from tests.table_files import titanic, write

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def _seed_encodings(registry, run) -> list[dict]:
    """The encoding each seed of the run's best candidate recorded (Preprocessing.encoding)."""
    best = await registry.get_iteration(run.run_id, run.best_iteration)
    results = await registry.seed_results(run.run_id, best.iteration, best.seeds)
    return [r.preprocessing.encoding for r in results.values()]


async def test_a_text_goal_a_sentence_pair_goal_and_a_table_goal_run_the_whole_loop(docker_engine, tmp_path):
    data = tmp_path / "data"
    write_reviews(data / "reviews", n_train=3000, n_test=400)
    write_paraphrase(data / "paraphrase", n_train=800, n_val=200, n_test=100)
    write(titanic(rows=600), data / "titanic.csv")
    # fixed run ids: the built-in search seeds itself from the run id, so each run tries the same candidates
    # every time (a fresh stack's registry is empty) and the test's time does not depend on a draw
    # the reviews need word order (a bag of words reaches about 0.6): the search's first text model does
    # one candidate each (max_iterations 1: a budget of one full evaluation), the search's first for its kind
    text = goal("text-1", goal="review sentiment", dataset="hf:reviews", target_accuracy=0.8, max_iterations=1,
                num_seeds=2, subset_size=None, max_epochs=4)
    pairs = goal("pair-1", goal="paraphrase or not", dataset="hf:paraphrase", max_iterations=1, num_seeds=2,
                 subset_size=None, max_epochs=2)
    table = goal("table-1", goal="who survived", dataset="csv:titanic.csv:Survived", max_iterations=1,
                 num_seeds=2, subset_size=None, max_epochs=4)
    env = {**FAST, "RESEARCHER_DATA__DIR": str(data)}
    with LocalStack(log_dir=tmp_path / "logs", env=env) as stack:
        nc, _, registry, text_events = await start_run(stack, text)
        await start_run(stack, pairs)
        await start_run(stack, table)
        runs = await asyncio.gather(*(_wait_terminal(registry, g.run_id, 500) for g in (text, pairs, table)))
        reports = [await load_report(registry, g.run_id) for g in (text, pairs, table)]
        encodings = [await _seed_encodings(registry, run) for run in runs]
        await export_run(registry, text.run_id, tmp_path / "export")
        await nc.close()
    text_run, pair_run, table_run = runs
    text_report, pair_report, table_report = reports

    for report in reports:
        assert report["status"] in ("goal_achieved", "max_iterations", "no_progress"), (report["status"], report["error"])
        evaluations = [it["evaluation"] for it in report["iterations"] if it["evaluation"]]
        assert evaluations and all(e["failed_seeds"] == [] for e in evaluations), report["iterations"]
        full = [it for it in report["iterations"] if it["fidelity"] == "full budget" and it["evaluation"]]
        assert full and all(it["evaluation"]["aggregated"]["val_accuracy"]["n"] == 2 for it in full)
        assert report["test"]["state"] == "tested", report["test"]  # the best candidate, on the held-out test split

    # text: token ids from a tokenizer fitted on each seed's training split; word order learnt
    facts = text_run.dataset_facts
    assert facts.kind == "text" and facts.input_dtype == "int64" and facts.text.vocab_size > 0
    assert facts.test_source == "official" and facts.num_test == 400
    assert text_run.status == "goal_achieved", (text_run.status, text_run.reason)
    assert all(e and e["vocab_size"] > 0 for e in encodings[0]), encodings[0]
    assert len({e["sha256"] for e in encodings[0]}) == 2  # each seed's own tokenizer, from its own training split
    assert any(e.kind == "validated" for e in text_events.events)
    # the export: its best seed's weights carry the tokenizer that seed fitted, so new texts are read as in training
    best = load_best(tmp_path / "export" / "experiments" / text.run_id / "best")
    test = load_from_disk(str(data / "reviews"))["test"]
    truth = [test.features["label"].names[y] for y in test["label"]]
    assert best.tokenizer is not None and best.tokenizer.sha256 in {e["sha256"] for e in encodings[0]}
    assert sum(p == t for p, t in zip(best.predict(test["text"]), truth)) / len(truth) > 0.8

    # pairs: two segments; GLUE's unlabelled test split is not a test split, the labelled validation one is
    facts = pair_run.dataset_facts
    assert facts.kind == "text" and facts.text.pair and facts.num_test == 200, facts
    assert "validation" in facts.test_note

    # the table: categories one-hot, blanks imputed, free text and the identifier dropped, each said
    facts = table_run.dataset_facts
    kinds = {c.name: c.kind for c in facts.columns}
    assert kinds["Sex"] == "category" and kinds["Age"] == "numeric" and kinds["Name"] == "dropped", kinds
    assert kinds["PassengerId"] == "dropped"
    assert next(c for c in facts.columns if c.name == "Age").missing > 0
    assert all(e and "columns" in e for e in encodings[2]), encodings[2]
    assert table_run.best_score > 0.7  # survival follows sex and class in the generated table
