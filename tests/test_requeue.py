"""launch/requeue.py on its own: the verdict from every process's recorded code, and the count of attempts
without progress (the batch script's use of it is tested under the fake SLURM in tests/test_launch.py)."""

from launch.requeue import attempts_without_progress, verdict
from trainer import exits


def history(*attempts):
    return [{"attempt": a, "newest_step": s} for a, s in attempts]


def test_attempts_without_progress_count_within_one_job_from_where_it_began():
    assert attempts_without_progress([], "5.0", None) == 1  # failed before saving anything
    assert attempts_without_progress([], "5.0", 1000) == 0  # saved a step
    assert attempts_without_progress(history(("5.0", 1000), ("5.1", 1000)), "5.2", 1000) == 2
    assert attempts_without_progress(history(("5.0", 1000), ("5.1", 2000)), "5.2", 2000) == 1
    # A resubmission (another job id) after a fix starts its own count, from the step the last job left.
    assert attempts_without_progress(history(("4.0", 10), ("4.1", 10), ("4.2", 10)), "5.0", 10) == 1
    assert attempts_without_progress(history(("4.0", 10)), "5.0", 20) == 0


def test_verdict_trusts_each_process_not_the_highest_status():
    args = dict(num_processes=3, status=76, stalled=1, restart=0, max_restarts=50, max_without_progress=3)
    assert verdict({0: 1, 1: 76, 2: 76}, **args)[:2] == ("exit", exits.BAD_INPUT)
    assert verdict({0: 77, 1: 76, 2: 76}, **args)[:2] == ("exit", exits.FENCED)
    assert verdict({0: 75, 1: 75, 2: 75}, **args)[0] == "requeue"
    assert verdict({1: 76, 2: 76}, **args)[0] == "requeue"  # process 0 killed: no record
    assert verdict({0: 0, 1: 0, 2: 0}, **{**args, "status": 0})[:2] == ("exit", exits.DONE)
    assert verdict({0: 76, 1: 76, 2: 76}, **{**args, "stalled": 3})[:2] == ("exit", exits.GAVE_UP)
    assert verdict({0: 75, 1: 75, 2: 75}, **{**args, "restart": 50, "status": 75})[:2] == ("exit", 75)
    # No process recorded anything (the interpreter did not start): srun's status decides.
    assert verdict({}, **{**args, "status": 2})[:2] == ("exit", 2)
    assert verdict({}, **{**args, "status": 137})[0] == "requeue"
