"""`make bench-export`: how long `researcher export --mlflow/--tensorboard` takes on a run of many
candidates. The candidates are copies of the stored run of tests/data (a 2-seed SmallCNN with its
curves; every 10th a rejected config), renumbered; the exports are the CLI's own functions, and
what they wrote is counted back with MLflow's client and TensorBoard's event reader."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import msgspec

from researcher.trackers import mlflow_export, tensorboard_export
from researcher.trackers.view import RunView, run_view
from shared.registry.records import IterationRecord, RunRecord, upgrade_run

STORED = Path(__file__).parents[1] / "tests" / "data" / "registry_before_typed_records.json"


def many_candidates(n: int) -> RunView:
    old = json.loads(STORED.read_text())
    run = msgspec.convert(upgrade_run(old["runs"]["old-run"]), RunRecord)
    trained = msgspec.convert(old["iterations"]["old-run.it0001"], IterationRecord)
    rejected = msgspec.convert(old["iterations"]["old-run.it0002"], IterationRecord)
    iterations = [msgspec.structs.replace(rejected if i % 10 == 0 else trained, iteration=i) for i in range(1, n + 1)]
    code = b"import torch.nn as nn\n" * 40
    return run_view(msgspec.structs.replace(run, current_iteration=n), iterations, {trained.code_artifact: code})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=200)
    p.add_argument("--mlflow", default=None, help="a tracking URI (default: a file store in a temporary folder)")
    args = p.parse_args()
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        started = time.monotonic()
        view = many_candidates(args.candidates)
        built = time.monotonic() - started
        uri = args.mlflow or str(Path(tmp) / "mlruns")
        timings = {}
        for attempt in ("first", "again"):  # the second replaces the first
            started = time.monotonic()
            _, experiment = mlflow_export.export(view, uri, f"bench-{os.getpid()}")
            timings[f"mlflow_{attempt}_s"] = round(time.monotonic() - started, 1)
        client = MlflowClient(tracking_uri=mlflow_export.tracking_uri(uri))
        runs = len(client.search_runs([experiment], max_results=50000))
        started = time.monotonic()
        folder = tensorboard_export.export(view, Path(tmp) / "tb")
        timings["tensorboard_s"] = round(time.monotonic() - started, 1)
        last = EventAccumulator(str(folder / f"c{args.candidates - 1:04d}" / "seed1")).Reload()
        print(json.dumps({"candidates": args.candidates, "view_s": round(built, 2), **timings, "mlflow_runs": runs,
                          "tensorboard_run_folders": sum(1 for _ in folder.rglob("events.out.tfevents.*")),
                          "last_seed_epochs": len(last.Scalars("val_accuracy"))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
