"""The two kinds of container runner the stack uses, built from the configuration: validation
containers (the sandbox service, `researcher validate`, the sandbox bench) and training
containers (the evaluator service, `researcher evaluate`)."""

from __future__ import annotations

import dataclasses

from shared.runtime.config import Config, gpu_devices
from shared.sandboxing.containers import ContainerRunner, Limits


def sandbox_limits(config: Config) -> Limits:
    s = config.sandbox
    return Limits(image=s.image, memory=s.memory, cpus=s.cpus, pids=s.pids, tmpfs_size=s.tmpfs_size,
                  tmpfs_inodes=s.tmpfs_inodes, nofile=s.nofile, fsize_bytes=s.fsize_bytes,
                  max_output_bytes=s.max_output_bytes, max_total_output_bytes=s.max_total_output_bytes,
                  runtime=s.runtime)


def make_runner(config: Config, owner: str) -> ContainerRunner:
    """Validation containers, `sandbox.pool_size` of them kept warm once `start_pool()` is called."""
    s = config.sandbox
    return ContainerRunner(sandbox_limits(config), owner=owner, pool_size=s.pool_size,
                           max_idle_s=s.pool_max_idle_s, max_job_s=s.validate_timeout_s, warm_flops=True)


def eval_limits(config: Config, gpus: bool) -> Limits:
    s, e = config.sandbox, config.evaluator
    return Limits(image=s.image, memory=e.memory, cpus=e.cpus, pids=s.pids, tmpfs_size=s.tmpfs_size,
                  tmpfs_inodes=s.tmpfs_inodes, nofile=s.nofile, fsize_bytes=s.fsize_bytes,
                  max_output_bytes=s.max_output_bytes, max_total_output_bytes=s.max_total_output_bytes,
                  runtime=s.runtime, gpus=gpus)


def want_gpus(setting: str, runtimes: dict) -> tuple[bool, tuple[str, ...]]:
    """evaluator.gpus and the engine's runtimes -> (pass GPUs through, only these device ids; ():
    all). auto: all, when the engine has the nvidia runtime; none; all; "0", "0,2", "GPU-<uuid>"."""
    mode, ids = gpu_devices(setting)
    return mode in ("all", "ids") or (mode == "auto" and "nvidia" in runtimes), ids


def make_eval_runner(config: Config, owner: str) -> ContainerRunner:
    """The training containers' runner, with the GPUs passed through (all, or the ones named) when
    the setting asks; its containers' expiry covers the longest training the configuration allows."""
    runner = ContainerRunner(eval_limits(config, False), owner=owner, max_job_s=config.evaluator.train_timeout_s,
                             pool_size=config.evaluator.pool_size, warm_train=True, measure_cost=True)
    try:
        runtimes = runner.client.info().get("Runtimes") or {}
    except Exception:
        runtimes = {}  # an engine that cannot say: auto means no GPUs
    gpus, gpu_ids = want_gpus(config.evaluator.gpus, runtimes)
    runner.limits = dataclasses.replace(runner.limits, gpus=gpus, gpu_ids=gpu_ids)
    return runner
