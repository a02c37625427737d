"""What a seed's training container cost, read from the engine (its cgroup), never from the code.

The harness's own baseline (the supervisor, the worker with torch imported, the data, the training
loop) is measured by control seeds of the same tiny model without the load: a model's figure is
its seed's minus the control's. Of two control seeds the lower figures count: cgroup v1 charges a
file's page cache to the container that first reads it, so whichever container first touches
files no other has read lately (the first of a session, often) peaks up to ~80 MB higher and
spends up to ~0.4 CPU s more. Measured on 2 cores under runc: the control peaks at ~295 MB (its
harness held ~160 MB when ready) and spends 1.1-1.5 CPU s; the 400 MB model peaks 419.5 MB
above it; 3 s of busy loop cost 2.8-3.2 CPU s above it.
"""

import msgspec
import pytest

from shared.evaluation.in_container import evaluate_job
from shared.messaging.messages import EvalJob, TrainingRecipe
from shared.sandboxing.containers import ContainerRunner, Limits
from tests.conftest import SANDBOX_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.alone]  # CPU seconds: a test beside it adds to them

BALLAST_BYTES = 400 * 2**20  # a float32 tensor of 100 Mi elements, written so that every page is resident
BUSY_S = 5.0  # CPU seconds of one thread's busy loop (the control's own CPU time varies by ~0.4 s)

MODEL = """
import time
import torch
from torch import nn

class Probe(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        if {ballast}:  # held, unregistered (not in the weights), for the whole training
            self.ballast = torch.ones({ballast} // 4)
        started = time.process_time()
        while time.process_time() - started < {busy}:  # this process's CPU time, whatever else runs
            pass

    def forward(self, x):
        return self.fc(x.flatten(1))
"""


@pytest.fixture(scope="module")
def runner(docker_engine):
    runner = ContainerRunner(Limits(image=SANDBOX_IMAGE, memory="2g", cpus=2.0), owner="tests-evaluator-cost",
                             measure_cost=True)
    yield runner
    runner.remove_strays()


def cost_of(runner, ballast: int = 0, busy: float = 0.0):
    job = EvalJob.with_recipe(TrainingRecipe(epochs=1, batch_size=64, lr=1e-3), job_id="cost.it0001.seed0", run_id="cost",
                              iteration=1, seed=0, dataset="digits", class_name="Probe",
                              source=MODEL.format(ballast=ballast, busy=busy))
    result = evaluate_job(job, runner, timeout_s=300, memory="2g")
    assert result.ok, result.error
    assert result.cost is not None
    return result.cost


@pytest.fixture(scope="module")
def control(runner):
    first, second = cost_of(runner), cost_of(runner)
    return msgspec.structs.replace(first, peak_memory_bytes=min(first.peak_memory_bytes, second.peak_memory_bytes),
                                   cpu_s=min(first.cpu_s, second.cpu_s))


def test_a_seed_reports_its_containers_cost_from_the_engine(control):
    assert control.measured_by.startswith("cgroup v1 (docker stats)"), control.measured_by
    assert control.cpu_s is not None and 0 < control.cpu_s < 30
    assert control.peak_memory_bytes is not None and control.baseline_memory_bytes is not None
    assert 0 < control.baseline_memory_bytes <= control.peak_memory_bytes < 2 * 2**30
    assert 0 < control.wall_s < 300
    assert control.gpu_s is None and control.peak_gpu_memory_bytes is None  # no GPU passed through


def test_a_model_holding_400_mb_peaks_400_mb_above_the_control(runner, control):
    held = cost_of(runner, ballast=BALLAST_BYTES)
    extra = held.peak_memory_bytes - control.peak_memory_bytes
    assert abs(extra - BALLAST_BYTES) < 0.1 * BALLAST_BYTES, (held, control)


def test_a_busy_loop_of_5_cpu_seconds_costs_5_cpu_seconds_above_the_control(runner, control):
    busy = cost_of(runner, busy=BUSY_S)
    extra = busy.cpu_s - control.cpu_s
    assert abs(extra - BUSY_S) < 0.1 * BUSY_S, (busy, control)
    assert busy.wall_s >= BUSY_S
