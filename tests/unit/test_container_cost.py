"""A container's counters as the engine gives them, on cgroup v1 and v2 hosts, and one job's figures."""

import shutil

import pytest

from shared.sandboxing.cost import Counters, GpuSampler, container_pids, counters_of, seed_cost

CID = "f" * 64
ENDED = {"memory_stats": {}, "cpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                                                         "usage_in_usermode": 0}}}  # an exited container's, as the engine says it
V2 = {"memory_stats": {"usage": 300 * 2**20, "stats": {"anon": 250 * 2**20, "file": 40 * 2**20}, "limit": 2**31},
      "cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000, "usage_in_kernelmode": 0, "usage_in_usermode": 0}}}


def test_an_ended_containers_stats_are_no_counters():
    assert counters_of(ENDED, CID) is None


@pytest.mark.parametrize("cgroup_dir", [f"system.slice/docker-{CID}.scope", f"docker/{CID}"])  # systemd, cgroupfs drivers
def test_on_cgroup_v2_the_peak_comes_from_the_cgroups_memory_peak(tmp_path, cgroup_dir):
    (tmp_path / cgroup_dir).mkdir(parents=True)
    (tmp_path / cgroup_dir / "memory.peak").write_text(f"{512 * 2**20}\n")
    assert counters_of(V2, CID, str(tmp_path)) == Counters(cpu_ns=2_500_000_000, memory_bytes=300 * 2**20,
                                                           peak_memory_bytes=512 * 2**20,
                                                           source="cgroup v2 (docker stats, memory.peak)")


def test_on_cgroup_v2_without_the_hosts_tree_there_is_no_peak_and_it_says_so(tmp_path):
    counters = counters_of(V2, CID, str(tmp_path))
    assert counters.peak_memory_bytes is None and counters.source == "cgroup v2 (docker stats; no peak readable)"


def test_cpu_counts_from_the_ready_line_and_gone_counters_leave_the_wall_time():
    ready = Counters(cpu_ns=1_000_000_000, memory_bytes=160 * 2**20, peak_memory_bytes=160 * 2**20, source="cgroup v1 (docker stats)")
    end = Counters(cpu_ns=4_250_000_000, memory_bytes=200 * 2**20, peak_memory_bytes=700 * 2**20, source="cgroup v1 (docker stats)")
    cost = seed_cost(ready, end, 5.0)
    assert (cost.cpu_s, cost.peak_memory_bytes, cost.baseline_memory_bytes, cost.wall_s) == (3.25, 700 * 2**20, 160 * 2**20, 5.0)
    assert seed_cost(None, end, 5.0, "runsc").measured_by == ("cgroup v1 (docker stats), CPU from the container's start, "
                                                            "gVisor's Sentry included")
    gone = seed_cost(ready, None, 5.0)
    assert gone.cpu_s is None and gone.peak_memory_bytes is None and gone.measured_by.startswith("engine clock only")


def test_a_containers_host_pids_come_from_its_cgroup(tmp_path):
    procs = tmp_path / "memory" / "docker" / CID / "cgroup.procs"
    procs.parent.mkdir(parents=True)
    procs.write_text("101\n202\n")
    assert container_pids(CID, str(tmp_path)) == {101, 202}
    assert container_pids("0" * 64, str(tmp_path)) == set()


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU host: the sampler measures there")
def test_without_nvidia_smi_the_gpu_figures_stay_none():
    assert GpuSampler(CID, every_s=0.01).start().stop() is None


def test_nvidia_smi_lines_give_each_process_its_gpu_and_each_gpu_its_load():
    from shared.sandboxing.cost import parse_apps, parse_loads

    apps = parse_apps("4242, GPU-aaa, 1024\n4243, GPU-bbb, 512\nnot a line\n4242, GPU-aaa, 1024\n")
    assert apps == {4242: ("GPU-aaa", 2048 * 2**20), 4243: ("GPU-bbb", 512 * 2**20)}
    assert parse_loads("GPU-aaa, 100\nGPU-bbb, 25\n[N/A]\n") == {"GPU-aaa": 1.0, "GPU-bbb": 0.25}
