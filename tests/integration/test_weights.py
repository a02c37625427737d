"""A model you can load: a real evaluator trains two seeds in real containers, their weights come
back and go to the registry (a real nats-server), the export writes best/, and the README's own
lines load the best seed and predict, scoring what the evaluator recorded."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.model_selection import train_test_split

from services.evaluator import main as evaluator_main
from shared.data.datasets import load_dataset, with_test_split
from shared.evaluation.aggregate import summarise
from shared.messaging import subjects
from shared.messaging.bus import connect, decode, encode, ensure_streams
from shared.messaging.messages import EvalJob, Goal, SeedResult, TrainingRecipe
from shared.modelspec.assemble import assemble
from shared.registry.records import IterationRecord, RunRecord
from shared.registry.report import export_run
from shared.registry.store import Registry
from shared.runtime.config import Config, DataConfig, EvaluatorConfig
from tests.integration.test_consumer import until
from tests.integration.test_sandbox import DIGITS_CNN

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("sequential_search")]

README = Path(__file__).resolve().parents[2] / "README.md"
SEEDS = [0, 1]


def readme_load_snippets() -> list[str]:
    """The README's Python blocks under "Loading the exported model" (with this package, then in
    plain PyTorch), exactly as written there."""
    text = README.read_text()
    section = text[text.index("### Loading the exported model"):]
    section = section[:section.index("\n#", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def raw_validation(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seed's validation inputs before normalisation, drawn as shared.data.datasets.split draws them
    (from the pool the test split leaves)."""
    ds = with_test_split(load_dataset("digits"))
    _, x_val, _, y_val = train_test_split(ds.x, ds.y, test_size=DataConfig().val_fraction, stratify=ds.y,
                                          random_state=seed)
    return x_val, y_val


async def train_through_the_evaluator(nats_url: str, nc, run_id: str, source: str, class_name: str) -> dict[int, SeedResult]:
    js = nc.jetstream()
    await ensure_streams(js)
    await Registry.open(js)  # the buckets, as a planner makes them: the weights' is the evaluator's to write
    results: dict[int, SeedResult] = {}

    async def on_result(msg) -> None:
        result = decode(msg.data, SeedResult, msg.subject)
        results[result.seed] = result

    await nc.subscribe(subjects.results_subject(run_id), cb=on_result)
    for seed in SEEDS:
        job = EvalJob.with_recipe(TrainingRecipe(epochs=3, batch_size=64, lr=3e-3), job_id=f"{run_id}.it0001.seed{seed}",
                                  run_id=run_id, iteration=1, seed=seed, dataset="digits", class_name=class_name,
                                  source=source)
        await js.publish(subjects.EVAL_SUBJECT, encode(job), headers={"Nats-Msg-Id": job.job_id})
    config = Config(nats_url=nats_url, evaluator=EvaluatorConfig(gpus="none", pool_size=0, memory="2g"))
    stop = asyncio.Event()
    evaluator_nc = await connect(nats_url, "evaluator-weights", role="evaluator")  # held to its role's permissions
    service = asyncio.create_task(evaluator_main.main(nc=evaluator_nc, config=config, stop=stop))
    try:
        await until(lambda: len(results) == len(SEEDS) or service.done(), timeout=300)
    finally:
        stop.set()
        await asyncio.wait_for(service, timeout=60)
    return results


async def test_exported_weights_load_and_score_what_the_evaluator_recorded(docker_engine, nats_url, nc, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("RESEARCHER_REPLICA", f"tests-weights-{os.getpid()}")
    run_id = f"weights-{os.getpid()}"
    model = assemble(DIGITS_CNN)
    results = await train_through_the_evaluator(nats_url, nc, run_id, model.source, model.class_name)

    # every seed scored, its weights checked and stored, its normalisation recorded
    for seed, result in results.items():
        assert result.ok, result.error
        # a name of this delivery's own: no put replaces an object
        assert re.fullmatch(rf"{run_id}/it0001/seed{seed}-[0-9a-f]{{12}}\.safetensors", result.weights or "")
        assert result.weights_error is None
        assert result.preprocessing is not None and result.preprocessing.shape == [1, 1, 1]  # one channel

    # the records a planner would have written, then the export
    registry = await Registry.open(nc.jetstream())
    code = await registry.put_artifact(f"{run_id}/it0001/model_code.py", model.source.encode())
    facts = with_test_split(load_dataset("digits")).facts()
    await registry.create_run(RunRecord(run_id=run_id, goal=Goal(run_id=run_id, goal="digits", dataset="digits"),
                                        status="max_iterations", current_iteration=1, best_iteration=1,
                                        dataset_facts=facts))
    evaluation = summarise(results, SEEDS)
    await registry.put_iteration(IterationRecord(run_id=run_id, iteration=1, state="decided", model_config=DIGITS_CNN,
                                                 class_name=model.class_name, code_artifact=code, seeds=SEEDS,
                                                 evaluation=evaluation))
    for result in results.values():
        await registry.put_seed_result(result)
    best = tmp_path / "export" / "experiments" / run_id / "best"
    await export_run(registry, run_id, tmp_path / "export")
    assert sorted(p.name for p in best.iterdir()) == ["model_code.py", "preprocessing.json", "seed_0.safetensors",
                                                       "seed_1.safetensors"]
    info = json.loads((best / "preprocessing.json").read_text())
    assert info["best_seed"] == evaluation.best_seed
    assert (info["dataset"], info["input_shape"], info["class_names"]) == ("digits", [1, 8, 8], list(facts.class_names))

    # the README's lines, run as written, on the best seed's raw validation inputs
    x_val, y_val = raw_validation(info["best_seed"])
    snippets = readme_load_snippets()
    assert len(snippets) == 2
    for snippet in snippets:
        namespace = {"best": str(best), "inputs": x_val}
        exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
        accuracy = float(np.mean(np.array(namespace["predicted"]) == np.array([info["class_names"][y] for y in y_val])))
        # the same accuracy the evaluator computed from the container's predictions; one sample of
        # slack: the container predicted in channels_last batches, here it is one contiguous batch
        recorded = results[info["best_seed"]].metrics["val_accuracy"]
        assert abs(accuracy - recorded) <= 1 / len(y_val) + 1e-9, (accuracy, recorded)
    plain = type(namespace["model"])  # the plain block's model, for the per-seed check below

    # every seed's weights with its own normalisation, straight through the code's class
    for seed in SEEDS:
        x_val, y_val = raw_validation(seed)
        entry = info["seeds"][str(seed)]
        net = plain()
        net.load_state_dict(load_file(best / entry["weights"]))
        net.eval()
        x = torch.as_tensor((x_val - np.array(entry["mean"])) / np.array(entry["std"]), dtype=torch.float32)
        with torch.no_grad():
            accuracy = float((net(x).argmax(1).numpy() == y_val).mean())
        assert abs(accuracy - results[seed].metrics["val_accuracy"]) <= 1 / len(y_val) + 1e-9
        assert abs(entry["val_accuracy"] - results[seed].metrics["val_accuracy"]) < 1e-12
