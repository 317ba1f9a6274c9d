"""The preflight's judgements: pure functions from gathered figures to rows (tested without a cluster), and the
two measurements that need no peers (the state's size, the write bandwidth of one save)."""

from __future__ import annotations

import os
import time
from collections import Counter

from launch.preflight.verdict import Row
from trainer import telemetry


def bus_bandwidth(bytes_per_device: int, seconds: float, devices: int) -> float:
    """nccl-tests' bus bandwidth of an all-reduce (its doc/PERFORMANCE.md): the algorithm bandwidth
    (bytes / time) times 2(n - 1)/n, the share of the data each link carries; comparable across device counts."""
    return bytes_per_device / seconds * (2 * (devices - 1) / devices if devices > 1 else 1.0)


def processes_row(count: int, expected: int | None) -> Row:
    if expected is None:
        return Row("every process started", True, f"{count} processes", "no expected count given: reported")
    return Row("every process started", count == expected, f"{count} of {expected} processes",
               "" if count == expected else "the job's layout and jax.distributed disagree: check --ntasks / "
               "JAX_NUM_PROCESSES")


def devices_row(devices: list[dict], expected: int | None) -> Row:
    """Each process's local device count against the expectation (or, without one, against process 0's). Which
    physical GPU a process drives is not compared: under a cgroup that confines each task to its GPU, every task
    numbers its own GPU 0."""
    counts = [d["count"] for d in devices]
    want = expected if expected is not None else counts[0]
    figure = f"{Counter(counts).most_common(1)[0][0]} {devices[0]['kind']} per process" + (
        f" ({devices[0]['runtime']})" if devices[0]["runtime"] not in ("", devices[0]["platform"]) else "")
    wrong = [i for i, c in enumerate(counts) if c != want]
    if wrong:
        return Row("each process sees its devices", False, figure, f"process(es) {wrong} see "
                   f"{[counts[i] for i in wrong]} device(s), expected {want}: check --gres / --gpus-per-task, "
                   "--ntasks-per-node and JAX_LOCAL_DEVICE_IDS")
    return Row("each process sees its devices", True, figure, f"expected {expected} per process"
               if expected is not None else "no expected count given: all equal")


def coordinator_row(address: str, init_seconds: float, barrier_seconds: float) -> Row:
    return Row("coordinator reachable", True, f"joined in {init_seconds:.2f} s, first barrier {barrier_seconds:.2f} s",
               f"{address}")


def all_reduce_row(result: dict) -> Row:
    ok = result["got"] == [result["expected"]]
    return Row("all-reduce across all devices", ok, f"bus bandwidth {result['bus_gb_per_s']:.2f} GB/s over "
               f"{result['devices']} devices", "sum as expected" if ok else
               f"expected {result['expected']:g} on every device, got {result['got']}: a wrong result from the "
               "collective library (NCCL_DEBUG=INFO, and check that every node runs the same driver)")


def input_rows(inputs: list[dict], batch_size: int, process_count: int, step_seconds: float,
               data_dir: str) -> list[Row]:
    errors = {i: d["error"] for i, d in enumerate(inputs) if d["error"]}
    readable = Row("data readable on every host", not errors, f"{len(inputs) - len(errors)} of {len(inputs)} "
                   "processes", f"{data_dir}" if not errors else "; ".join(
                       f"process {i} on {inputs[i]['host']}: {e}" for i, e in errors.items()))
    # The trainer's own per-host measure (trainer/telemetry.py): here every process only reads, so each one
    # waits for its input all the time, and the hosts come slowest first by their summed videos/s.
    records = [telemetry.record(0, i, 1.0, d["videos"] / d["seconds"], d["host"]) for i, d in enumerate(inputs)
               if not d["error"] and d["seconds"] > 0]
    if errors or not records:
        return [readable, Row("input keeps up on every host", False, "not measured", "the data is not readable")]
    found = telemetry.hosts(records)
    rates = {h.name: h.videos_per_sec for h in found}
    slowest = found[0].name
    figure = f"slowest host {rates[slowest]:,.0f} videos/s"
    if step_seconds <= 0:
        return [readable, Row("input keeps up on every host", True, figure, "no --assumed_step_seconds: reported")]
    need = {h.name: batch_size / process_count * h.processes / step_seconds for h in found}
    short = [h for h in rates if rates[h] < need[h]]
    return [readable, Row("input keeps up on every host", not short, figure + f", needs {need[slowest]:,.0f}",
                          f"batch {batch_size} at {step_seconds:g} s per step" if not short else
                          f"{', '.join(short)} below need: raise data.worker_count / read_threads or CPUs per task")]


def shared_row(results: list[dict], directories: list[str]) -> Row:
    problems = []
    for i, r in enumerate(results):
        problems += [f"process {i} cannot write {d} ({e})" for d, e in r["write"].items()]
        problems += [f"process {i} does not see the files of process(es) {who} in {d}"
                     for d, who in r["unseen"].items()]
    if not problems:
        return Row("run and cache directories shared", True, f"{len(results)} processes x {len(directories)} "
                   "directories", "every process read every other's file")
    return Row("run and cache directories shared", False, f"{len(problems)} problem(s)", "; ".join(problems[:4])
               + (" ..." if len(problems) > 4 else "") + ": put RUN_DIR and the compilation cache on storage that "
               "every host mounts at the same path")


def save_row(save: dict | None) -> Row:
    if save is None or save.get("error"):
        return Row("save write bandwidth", False, "not measured", (save or {}).get("error", ""))
    return Row("save write bandwidth", True, f"{save['mb_per_s']:,.0f} MB/s, {save['seconds_per_save']:.2f} s per "
               f"save", f"{save['state_mb']:,.1f} MB of state written and fsynced from process 0")


def clock_row(skew: float | None, max_skew: float, hosts: int) -> Row:
    if skew is None:
        return Row("clock skew between hosts", False, "not measured", "")
    return Row("clock skew between hosts", skew <= max_skew, f"{skew * 1000:.1f} ms over {hosts} host(s)",
               f"at most {max_skew:g} s" if skew <= max_skew else f"more than {max_skew:g} s: logs and checkpoint "
               "times disagree between hosts; run chrony or ntpd on every node")


def state_bytes(config) -> int:
    """The train state's bytes (parameters and optimizer state): what one checkpoint writes."""
    from trainer import program

    return program.from_config(config).state_bytes()


def save_bandwidth(directory: str, nbytes: int, chunk: int = 16 * 2**20) -> dict:
    """Writes `nbytes` (at most 2 GiB) to a file in `directory`, fsyncs it and removes it: MB/s, and the seconds
    one save of `nbytes` takes at that rate."""
    path = os.path.join(directory, f"save-probe-{os.getpid()}")
    size = min(nbytes, 2 * 2**30)
    block = os.urandom(min(chunk, size))
    try:
        os.makedirs(directory, exist_ok=True)
        start = time.perf_counter()
        with open(path, "wb") as f:
            written = 0
            while written < size:
                written += f.write(block[: size - written])
            f.flush()
            os.fsync(f.fileno())
        seconds = time.perf_counter() - start
        os.remove(path)
    except OSError as e:
        return {"error": f"cannot write {path}: {e.strerror}"}
    rate = size / seconds
    return {"mb_per_s": rate / 1e6, "seconds_per_save": nbytes / rate, "state_mb": nbytes / 1e6}
