"""Successive halving over epochs and seeds (asynchronous, as ASHA): which candidate earns more
compute, and when a run's compute budget is spent. Pure logic; the planner and `make bench-search`
drive it.

A candidate's ladder: `lower_rungs` cheap rungs, then the full budget (its own epochs, every seed
of the goal). Rung r of L trains 1/eta^(L - r) of its epochs on 1/eta^(L - r) of its seeds (at
least one of each), so with eta 3 and 2 lower rungs a 10-epoch, 5-seed candidate trains 2 epochs
on 1 seed, then 4 epochs on 2 seeds, then 10 on 5. A rung no cheaper than the one above it is
dropped (a 3-epoch, 1-seed candidate goes from 1 epoch straight to 3).

Promotion (ASHA, Li et al. 2020): of the candidates that finished rung r, the best 1/eta (rounded
down) earn the next rung; one is promoted as soon as a slot is free and it ranks there, so no rung
waits for a full cohort. A candidate whose cheap score already meets the target is promoted at
once. Rungs compare candidates at the same fraction of their own training.

Compute is counted in seed-epochs (one seed trained for one epoch), as dispatched: a rung's cost
is its epochs times its seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from shared.messaging.messages import Goal

FULL = None  # the rung index of the full budget


@dataclass(frozen=True)
class Rung:
    index: int | None  # 0, 1, ... for the cheap rungs; None (FULL) for the full budget
    epochs: int
    seeds: tuple[int, ...]

    @property
    def cost(self) -> int:
        return self.epochs * len(self.seeds)

    @property
    def name(self) -> str:
        return "full" if self.index is FULL else f"rung {self.index}"

    def describe(self) -> str:
        return f"{self.name} ({self.epochs} epoch{'s' * (self.epochs != 1)}, {len(self.seeds)} seed{'s' * (len(self.seeds) != 1)})"


def ladder(epochs: int, num_seeds: int, lower_rungs: int, eta: int) -> list[Rung]:
    """The rungs of a candidate that trains `epochs` epochs on `num_seeds` seeds at full budget."""
    kept = [Rung(FULL, epochs, tuple(range(num_seeds)))]
    for r in reversed(range(lower_rungs)):
        shrink = eta ** (lower_rungs - r)
        rung = Rung(r, max(1, math.ceil(epochs / shrink)), tuple(range(max(1, math.ceil(num_seeds / shrink)))))
        if rung.cost < kept[0].cost:
            kept.insert(0, rung)
    return kept


def budget_epochs(goal: Goal, max_epochs: int) -> int:
    """A run's compute budget in seed-epochs: the goal's, or max_iterations full evaluations at the
    longest training allowed (what max_iterations candidates cost before the search had rungs, at most)."""
    return goal.epoch_budget or goal.max_iterations * goal.num_seeds * max_epochs


@dataclass
class Trial:
    """A candidate as the scheduler sees it."""

    number: int
    rungs: list[Rung]  # its ladder
    reached: int = 0  # position in `rungs` of the rung it trains for, or last finished
    scores: dict[int | None, float | None] = field(default_factory=dict)  # rung index -> its score (None: failed)
    in_flight: bool = True  # being built, validated or trained
    closed: bool = False  # rejected, or finished its full rung: nothing more to do

    @property
    def rung(self) -> Rung:
        return self.rungs[self.reached]

    @property
    def parked(self) -> bool:
        """Finished a cheap rung and waits to be promoted (or not)."""
        return not self.in_flight and not self.closed and self.rung.index in self.scores

    @property
    def next_rung(self) -> Rung | None:
        return self.rungs[self.reached + 1] if self.reached + 1 < len(self.rungs) else None


def spent(trials: list[Trial]) -> int:
    """Seed-epochs dispatched so far (finished or in flight)."""
    total = 0
    for t in trials:
        finished = [r for r in t.rungs[: t.reached + 1] if r.index in t.scores]
        total += sum(r.cost for r in finished)
        if t.in_flight and t.rung.index not in t.scores:
            total += t.rung.cost
    return total


def ranked(trials: list[Trial], index: int) -> list[Trial]:
    """The trials that finished rung `index` with a score, best first (ties: the earlier one)."""
    scored = [t for t in trials if t.scores.get(index) is not None]
    return sorted(scored, key=lambda t: (-t.scores[index], t.number))  # type: ignore[operator]


def promotable(trials: list[Trial], eta: int, target: float | None = None) -> list[Trial]:
    """Parked trials that earn their next rung now, the highest rung first (ASHA's order)."""
    out: list[Trial] = []
    indices = sorted({t.rung.index for t in trials if t.parked}, reverse=True)  # FULL never parks
    for index in indices:
        order = ranked(trials, index)
        top = order[: len(order) // eta]
        reached_target = [t for t in order if target is not None and t.scores[index] >= target]
        out += [t for t in order if t.parked and t.rung.index == index and (t in top or t in reached_target)]
    return out


def best_parked(trials: list[Trial]) -> Trial | None:
    """The end game: with nothing in flight and nothing earning promotion, the parked trial at the
    highest rung with the best score, so a run that can afford it ends with a full evaluation."""
    parked = [t for t in trials if t.parked and t.scores.get(t.rung.index) is not None]
    return min(parked, key=lambda t: (-(t.reached), -(t.scores[t.rung.index] or 0.0), t.number), default=None)


@dataclass(frozen=True)
class Promotion:
    trial: Trial
    to: Rung  # its next rung, or (the end game) its full one


@dataclass(frozen=True)
class Plan:
    promote: list[Promotion]  # in this order
    propose: int  # new candidates to propose
    forced: bool = False  # the promotion is the end game's, not earned by rank


def plan(trials: list[Trial], *, parallel: int, budget: int, new_cost: int, reserve: int, eta: int,
         target: float | None = None) -> Plan:
    """What to start now: promotions first (they are what the cheap rungs were for), then new
    candidates. `reserve` seed-epochs (a full evaluation at the longest training) are kept for the
    end: neither a new candidate nor a promotion below the full budget may eat into them, so a run
    that can afford one full evaluation ends with one. `new_cost` is an upper bound of a new
    candidate's first rung. The run's first candidate is always proposed."""
    left = budget - spent(trials)
    slots = parallel - sum(1 for t in trials if t.in_flight)
    promote: list[Promotion] = []
    for t in promotable(trials, eta, target):
        rung = t.next_rung
        if slots <= 0:
            break
        keep = 0 if rung is None or rung.index is FULL else reserve
        if rung is not None and rung.cost + keep <= left:
            promote.append(Promotion(t, rung))
            left -= rung.cost
            slots -= 1
    propose = 0
    while slots > 0 and (left - new_cost >= reserve or (not trials and not propose and new_cost <= left)):
        propose += 1
        left -= new_cost
        slots -= 1
    if not promote and not propose and not any(t.in_flight for t in trials):
        # the end game: the best cheap result straight to its full budget, if that still fits
        fits = [t for t in trials if t.parked and t.scores.get(t.rung.index) is not None and t.rungs[-1].cost <= left]
        last = best_parked(fits)
        if last is not None:
            return Plan(promote=[Promotion(last, last.rungs[-1])], propose=0, forced=True)
    return Plan(promote=promote, propose=propose)
