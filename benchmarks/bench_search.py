"""`make bench-search`: the planner's search (successive halving, candidates in flight, TPE with a
constant liar, local moves) against the old sequential TPE and against random search, in one run.

Each policy searches the same space (services/planner/search.py) on the same goals, several seeds
of the whole search each (the seed is the run id the built-in search seeds itself from; a seed's
three searches share it), under the same compute budget in seed-epochs. The goals are ones the
default configuration does not reach: a generated tabular problem with clustered classes and
features scaled across five orders of magnitude, a 500-sample subset of digits with a high target,
and (optional) an XOR of two moons and two rings among noise features. A tuned reference
(scikit-learn's HistGradientBoostingClassifier on the same splits) and the default configuration's
own score are printed beside each target.

benchmarks/search_sim.py replays the planner's driver and trains in this process with the
project's engine on models the deterministic assembler writes from the search's configs (never an
LLM's code, so in-process is acceptable here); the wall time is simulated for R evaluator replicas
from each job's measured time. Training is deterministic on the CPU, so a configuration two
searches both try (the default is every search's first) trains once; the real seconds printed are
this process's, with that cache.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn import datasets as skd
from sklearn.ensemble import HistGradientBoostingClassifier

from benchmarks.search_sim import Outcome, Policy, Problem, Trainer, policies, simulate
from services.planner.search import SearchBounds, default_params, to_model_config
from shared.data.datasets import Dataset, load_dataset, split
from shared.messaging.messages import TrainingRecipe
from shared.modelspec.assemble import assemble
from shared.runtime.config import PlannerConfig


def _scaled(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-feature scales from 0.01 to 1000 and offsets up to +-100: raw inputs train badly, the
    pipeline's standardisation (a recipe choice the search makes) undoes it."""
    return x * 10 ** rng.uniform(-2, 3, x.shape[1]) + rng.uniform(-100, 100, x.shape[1])


def clusters() -> Dataset:
    """3 classes of 3 clusters each in 6 informative of 12 features (2 redundant, 4 noise)."""
    x, y = skd.make_classification(n_samples=1200, n_features=12, n_informative=6, n_redundant=2, n_classes=3,
                                   n_clusters_per_class=3, class_sep=1.0, flip_y=0.01, random_state=0)
    return Dataset("clusters", "tabular", _scaled(x, np.random.default_rng(0)).astype(np.float32), y.astype(np.int64),
                   ("0", "1", "2"))


def xor() -> Dataset:
    """The label is (which moon) XOR (which ring), beside 6 noise features: no single pair of
    features separates the classes."""
    rng = np.random.default_rng(1)
    a, ya = skd.make_moons(1000, noise=0.25, random_state=1)
    b, yb = skd.make_circles(1000, noise=0.1, factor=0.5, random_state=2)
    x = np.hstack([a, b, rng.standard_normal((1000, 6))])
    return Dataset("xor", "tabular", _scaled(x, rng).astype(np.float32), (ya ^ yb).astype(np.int64), ("0", "1"))


# name -> (data, target on the mean validation accuracy, subset_size); targets measured: see the README
GOALS = {
    "clusters": (clusters, 0.80, None),
    "digits": (lambda: load_dataset("digits"), 0.975, 500),
    "xor": (xor, 0.75, None),
}


def problem(spec: str, num_seeds: int, max_epochs: int) -> Problem:
    """A goal by name, its target as GOALS says or as `name=target` gives it."""
    name, _, target = spec.partition("=")
    if name not in GOALS:
        raise SystemExit(f"unknown goal {name!r}; known: {', '.join(GOALS)}")
    data, default, subset = GOALS[name]
    try:
        chosen = float(target) if target else default
    except ValueError:
        raise SystemExit(f"goal {spec!r}: the target must be a fraction, e.g. {name}={default}") from None
    if not 0 < chosen <= 1:
        raise SystemExit(f"goal {spec!r}: the target must be in (0, 1] (a fraction: 0.95, not 95)")
    return Problem(name, data(), chosen, num_seeds=num_seeds, max_epochs=max_epochs, subset_size=subset)


def reference(p: Problem) -> float:
    """HistGradientBoostingClassifier (defaults) on the goal's own splits, mean over its seeds."""
    scores = []
    for seed in range(p.num_seeds):
        d = split(p.dataset, seed, p.val_fraction, p.subset_size)
        model = HistGradientBoostingClassifier(random_state=0).fit(d.x_train.reshape(len(d.x_train), -1), d.y_train)
        scores.append(model.score(d.x_val.reshape(len(d.x_val), -1), d.y_val))
    return statistics.mean(scores)


def default_score(p: Problem, trainer: Trainer) -> float:
    """The search's first trial, the known-good default, at the full budget (mean over seeds)."""
    facts = p.dataset.facts()
    bounds = SearchBounds(max_epochs=p.max_epochs, num_train=facts.num_train(p.val_fraction, p.subset_size))
    config = to_model_config(facts, default_params(facts, bounds))
    built = assemble(config)
    recipe = TrainingRecipe.from_model_config(config)
    results = [trainer.seed(p, built.source, built.class_name, recipe, s)[0] for s in range(p.num_seeds)]
    return statistics.mean(r.metrics.get("val_accuracy") or 0.0 if r.ok else 0.0 for r in results)


# the planner settings --planner may change for the new policy, and their types
TUNABLE = {"parallel": int, "lower_rungs": int, "reduction_factor": int, "local_share": float}


def planner_settings(spec: str) -> PlannerConfig:
    """`parallel=2,lower_rungs=1` -> the planner's defaults with those keys changed: the new
    policy's settings, so a variant of the defaults is measured against the same baselines."""
    changes: dict[str, int | float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        if key not in TUNABLE or not sep:
            raise SystemExit(f"--planner {item!r}: expected KEY=VALUE, KEY one of {', '.join(TUNABLE)}")
        kind = TUNABLE[key]
        try:
            changes[key] = kind(value)
        except ValueError:
            raise SystemExit(f"--planner {item!r}: {key} takes {'an integer' if kind is int else 'a number'}, "
                             f"e.g. {key}={getattr(PlannerConfig(), key)}") from None
    try:
        return PlannerConfig(**changes)
    except ValueError as e:
        raise SystemExit(f"--planner {spec!r}: {e}") from None


# ---- the figures ----
@dataclass(frozen=True)
class Row:
    policy: str
    reached: int
    runs: int
    to_target: float | None  # median seed-epochs to the target, over the searches that reached it
    best: float | None  # median of each search's best full-budget score
    sim_to_target_s: float | None  # median simulated seconds to the target
    sim_wall_s: float  # median simulated seconds to the end (the target, or the budget spent)
    real_s: float  # this process's seconds, all searches
    candidates: float  # median candidates proposed per search
    full: float  # median candidates evaluated at the full budget per search


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def row(policy: str, outcomes: list[Outcome]) -> Row:
    reached = [o for o in outcomes if o.reached]
    return Row(policy, len(reached), len(outcomes), _median([o.to_target for o in reached]),
               _median([o.best for o in outcomes if o.best is not None]),
               _median([o.sim_to_target_s for o in reached]), statistics.median(o.sim_wall_s for o in outcomes),
               sum(o.real_s for o in outcomes), statistics.median(o.candidates for o in outcomes),
               statistics.median(o.full_evaluations for o in outcomes))


def paired_ratio(new: list[Outcome], other: list[Outcome], field: str) -> tuple[float | None, int]:
    """Geometric mean of other/new over the search seeds where both reached the target; -> (ratio, pairs)."""
    pairs = [(getattr(o, field), getattr(n, field)) for n, o in zip(new, other) if n.reached and o.reached]
    pairs = [(a, b) for a, b in pairs if a and b]
    if not pairs:
        return None, 0
    return math.exp(statistics.mean(math.log(a / b) for a, b in pairs)), len(pairs)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report(goal: Problem, budget: int, results: dict[str, list[Outcome]]) -> list[str]:
    lines = [f"  {'policy':<7} {'reached':>8} {'to target':>10} {'best':>7} {'sim to target':>14} {'sim wall':>9} "
             f"{'real':>7} {'cands':>5} {'full':>4}  (medians; compute in seed-epochs of {budget}, times in seconds)"]
    for name, outcomes in results.items():
        r = row(name, outcomes)
        lines.append(f"  {r.policy:<7} {f'{r.reached}/{r.runs}':>8} {_fmt(r.to_target, '.0f'):>10} {_fmt(r.best, '.4f'):>7} "
                     f"{_fmt(r.sim_to_target_s, '.1f'):>14} {r.sim_wall_s:>9.1f} {r.real_s:>7.1f} "
                     f"{r.candidates:>5g} {r.full:>4g}")
    new = results["new"]
    for other in [p for p in results if p != "new"]:
        compute, n = paired_ratio(new, results[other], "to_target")
        wall, _ = paired_ratio(new, results[other], "sim_to_target_s")
        lines.append(f"  new vs {other}: reached {sum(o.reached for o in new)} vs {sum(o.reached for o in results[other])}; "
                     + (f"where both reached ({n} seeds): {compute:.2f}x less compute, {wall:.2f}x less "
                        "simulated wall time to the target (geometric means of other / new)" if compute and wall
                        else "no seed where both reached the target"))
    return lines


async def bench(goals: list[str], seeds: int, budget: int | None, num_seeds: int, max_epochs: int, replicas: int,
                overhead_s: float, chosen: list[Policy]) -> list[str]:
    trainer = Trainer()
    out = [f"bench-search: {seeds} searches per policy and goal, {num_seeds} seeds per candidate, "
           f"at most {max_epochs} epochs; wall time simulated for {replicas} evaluator replicas from each job's "
           f"measured training time (the jobs ran one after another on this machine's {os.cpu_count()} cores, "
           f"{torch.get_num_threads()} torch thread(s)), {overhead_s:g} s per job added for a container; the planner's "
           "own time is not on that clock"]
    out.append("policies: " + "; ".join(f"{p.name}: {p.parallel} in flight, {p.lower_rungs} cheap rungs (eta "
                                        f"{p.reduction_factor}), local moves {p.local_share:.0%}, {p.sampler}"
                                        for p in chosen))
    totals = {p.name: 0 for p in chosen}
    for name in goals:
        goal = problem(name, num_seeds, max_epochs)
        goal_budget = budget or 8 * num_seeds * max_epochs  # 8 full evaluations at the longest training
        out.append(f"\n{goal.name}: target {goal.target:.3f} (mean validation accuracy); tuned reference "
                   f"HistGradientBoosting {reference(goal):.4f}; the default configuration "
                   f"{default_score(goal, trainer):.4f}; budget {goal_budget} seed-epochs")
        results: dict[str, list[Outcome]] = {p.name: [] for p in chosen}
        for seed in range(seeds):
            for policy in chosen:
                results[policy.name].append(await simulate(policy, goal, seed, goal_budget, trainer, replicas, overhead_s))
        out += report(goal, goal_budget, results)
        for p, outcomes in results.items():
            totals[p] += sum(o.reached for o in outcomes)
        print("\n".join(out), flush=True)
        out = []
    out.append("\ngoals reached, all goals: " + ", ".join(f"{p} {n}/{seeds * len(goals)}" for p, n in totals.items()))
    out.append(f"trained jobs: {trainer.jobs} (the rest were a configuration another search had trained)")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--goals", default="clusters,digits,xor", help=f"comma-separated, of: {', '.join(GOALS)}; name=0.9 sets a target")
    parser.add_argument("--seeds", type=int, default=3, help="searches per policy and goal (default 3)")
    parser.add_argument("--budget", type=int, default=None,
                        help="seed-epochs per search (default: 8 full evaluations, 8 x num-seeds x max-epochs)")
    parser.add_argument("--num-seeds", type=int, default=2, help="seeds per candidate at the full budget (default 2)")
    parser.add_argument("--max-epochs", type=int, default=20, help="the search's longest training (default 20)")
    parser.add_argument("--replicas", type=int, default=2, help="evaluator replicas of the simulated clock (default 2)")
    parser.add_argument("--job-overhead", type=float, default=0.0,
                        help="seconds added to each seed job on the simulated clock (a container's start; default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    parser.add_argument("--policies", default="new,old,random", help="comma-separated, of: new, old, random")
    parser.add_argument("--planner", default="", help="the new policy's settings instead of the planner's defaults, "
                        f"e.g. parallel=2,lower_rungs=1 (of: {', '.join(TUNABLE)})")
    args = parser.parse_args(argv)
    if min(args.seeds, args.num_seeds, args.max_epochs, args.replicas, args.threads) < 1 or (args.budget or 1) < 1:
        parser.error("--seeds, --num-seeds, --max-epochs, --replicas, --threads and --budget must be at least 1")
    known = {p.name: p for p in policies(planner_settings(args.planner))}
    chosen = [known[n] for n in args.policies.split(",") if n in known]
    if "new" not in [p.name for p in chosen] or len(chosen) != len(args.policies.split(",")):
        parser.error(f"--policies: 'new' and any of old, random, not {args.policies!r}")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lines = asyncio.run(bench([g.strip() for g in args.goals.split(",") if g.strip()], args.seeds, args.budget,
                              args.num_seeds, args.max_epochs, args.replicas, args.job_overhead, chosen))
    print("\n".join(lines))
    print(f"real elapsed: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
