"""The export's `best/` folder: what using a run's best model takes, without retraining.

    experiments/<run_id>/best/
        model_code.py            the generated code (the class named in preprocessing.json)
        seed_<n>.safetensors     each seed's trained weights, as the evaluator checked them
        preprocessing.json       the data set, input shape, class names, and each seed's
                                 normalisation (its own training split's mean and std) and
                                 encoding (a text set's tokenizer: kind, size, sha256)

The weights were checked when they came out of their container (shared.evaluation.weights); they
are written as stored. Loading them means importing model_code.py in one's own process: the
same code the report shows, run outside the sandbox by the user's choice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.messaging.messages import SeedResult
from shared.registry.records import DEFAULT_METRIC, IterationRecord, RunRecord, SeedRow
from shared.registry.store import Registry

NORMALISE = ("x = (x - mean) / std, with mean and std of the seed's own training split: per channel for images "
             "(shape (C, 1, 1)), per feature for tables (shape (F,)); they broadcast over a batch")
TOKENISE = ("text: int64 token ids (N, max_length), never normalised (mean 0, std 1), made by the tokenizer its seed "
            "fitted on its own training split, which the seed's safetensors file holds in its metadata "
            "(\"tokenizer.json\", and \"id_permutation\" for a user's tokenizer whose special ids were moved); "
            "layout [CLS] a [SEP] (b [SEP]) cut longest-first, padded with 0 ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3), "
            "ids at or above the encoding's id_limit read as [UNK]; researcher.load.load_best(folder).predict(texts) "
            "applies it")


def _seed_entry(result: SeedResult | None, row: SeedRow | None, seed: int, weights_written: bool) -> dict[str, Any]:
    if result is None:  # the evaluation's row still says how the seed did
        return {"ok": row.ok if row else None, "val_accuracy": row.metrics.get(DEFAULT_METRIC) if row else None,
                "weights": None, "weights_error": "the registry holds no result of this seed (recorded before weights were)"}
    entry: dict[str, Any] = {"ok": result.ok, "val_accuracy": result.metrics.get(DEFAULT_METRIC),
                             "weights": f"seed_{seed}.safetensors" if weights_written else None}
    if not result.ok:
        entry["weights_error"] = f"the seed failed: {result.error}"
    elif not weights_written:
        entry["weights_error"] = (result.weights_error or (f"the registry no longer holds {result.weights}" if result.weights
                                  else "none were kept: recorded before weights were, or evaluator.max_weights_bytes is 0"))
    if result.preprocessing is not None:
        import numpy as np  # here: report and export are read by commands that start without numpy

        p = result.preprocessing
        entry["mean"] = np.reshape(p.mean, p.shape).tolist()
        entry["std"] = np.reshape(p.std, p.shape).tolist()
        if p.encoding is not None:  # fitted on this seed's training split, applied before the normalisation
            entry["encoding"] = p.encoding
    return entry


async def export_best(registry: Registry, run: RunRecord, it: IterationRecord, code: bytes | None, folder: Path) -> Path:
    """Write `folder` (best/) for the run's best iteration `it`; -> the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    if code:
        (folder / "model_code.py").write_bytes(code)
    results = await registry.seed_results(run.run_id, it.iteration, it.seeds)
    rows = {row.seed: row for row in it.evaluation.seed_results} if it.evaluation else {}
    seeds = {}
    for seed in it.seeds:
        result = results.get(seed)
        data = await registry.get_artifact(result.weights) if result is not None and result.weights else None
        if data is not None:
            (folder / f"seed_{seed}.safetensors").write_bytes(data)
        seeds[str(seed)] = _seed_entry(result, rows.get(seed), seed, data is not None)
    facts = run.dataset_facts
    best_seed = it.evaluation.best_seed if it.evaluation else None
    info = {
        "run_id": run.run_id, "iteration": it.iteration, "class_name": it.class_name,
        "dataset": run.goal.dataset, "kind": facts.kind if facts else None,
        "input_shape": list(facts.input_shape) if facts else None,  # one sample's, without the batch axis
        "class_names": list(facts.class_names) if facts else [],  # output column i is class_names[i]
        "inputs": ("a table's raw rows (its file's columns), encoded with a seed's `encoding`, then normalised: "
                   "researcher.load.load_best(folder).predict(a pandas DataFrame) does both" if facts and facts.columns
                   else "samples as shared.data.datasets.load_dataset(dataset).x gives them, shaped (N, *input_shape)"),
        "normalise": NORMALISE,
        **({"tokenise": TOKENISE, "input_dtype": "int64"} if facts and facts.kind == "text" else {}),
        # the seed highest on validation accuracy, when its weights were kept; else the first that has some
        "best_seed": best_seed if seeds.get(str(best_seed), {}).get("weights")
        else next((int(s) for s, e in seeds.items() if e["weights"]), None),
        "seeds": seeds,
    }
    (folder / "preprocessing.json").write_text(json.dumps(info, indent=2))
    return folder
