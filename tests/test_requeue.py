"""launch/requeue.py on its own: the verdict from every process's recorded code, and the count of attempts
without progress (the batch script's use of it is tested under the fake SLURM in tests/test_launch.py)."""

from launch.requeue import attempts_without_progress, node_of_process, slurm_seconds, verdict
from trainer import exits


def pair(v):
    return v.action, v.code


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
    assert pair(verdict({0: 1, 1: 76, 2: 76}, **args)) == ("exit", exits.BAD_INPUT)
    assert pair(verdict({0: 77, 1: 76, 2: 76}, **args)) == ("exit", exits.FENCED)
    assert verdict({0: 75, 1: 75, 2: 75}, **args).action == "requeue"
    assert verdict({1: 76, 2: 76}, **args).action == "requeue"  # process 0 killed: no record
    assert pair(verdict({0: 0, 1: 0, 2: 0}, **{**args, "status": 0})) == ("exit", exits.DONE)
    assert pair(verdict({0: 76, 1: 76, 2: 76}, **{**args, "stalled": 3})) == ("exit", exits.GAVE_UP)
    assert pair(verdict({0: 75, 1: 75, 2: 75}, **{**args, "restart": 50, "status": 75})) == ("exit", 75)
    # No process recorded anything (the interpreter did not start): srun's status decides.
    assert pair(verdict({}, **{**args, "status": 2})) == ("exit", 2)
    assert verdict({}, **{**args, "status": 137}).action == "requeue"


def test_verdict_restarts_in_place_only_when_every_node_answered():
    args = dict(num_processes=2, status=76, stalled=0, restart=0, max_restarts=50, max_without_progress=3,
                max_in_place=2)
    assert verdict({0: 74, 1: 74}, **args).action == "restart"
    assert verdict({0: 76, 1: 74}, **{**args, "in_place": 1}).action == "restart"
    assert verdict({0: 76, 1: 76}, **{**args, "in_place": 2}).action == "requeue"  # the in-place budget is spent
    assert verdict({0: 75, 1: 75}, **args).action == "requeue"  # preempted: this allocation is going away
    assert verdict({1: 76}, **args).action == "requeue"  # process 0 left no record
    assert verdict({0: 74, 1: 74}, **{**args, "max_in_place": 0}).action == "requeue"


def test_verdict_excludes_a_node_that_left_no_record_while_the_others_did():
    args = dict(num_processes=4, status=137, stalled=0, restart=0, max_restarts=50, max_without_progress=3)
    nodes = node_of_process(["n1", "n2"], "2(x2)")
    assert nodes == {0: "n1", 1: "n1", 2: "n2", 3: "n2"}
    got = verdict({0: 76, 1: 76}, **args, nodes=nodes)
    assert (got.action, got.exclude, got.line()) == ("requeue", ("n2",), "requeue exclude n2")
    # One process of a node killed (the OOM killer) while its neighbour recorded: the node answered.
    assert verdict({0: 76, 2: 76, 3: 76}, **args, nodes=nodes).exclude == ()
    assert verdict({}, **args, nodes=nodes).exclude == ()  # the whole step died: not one node's fault


def test_verdict_never_requeues_a_job_that_is_no_longer_running():
    """After `scancel JOB` every process saved and exited 75, but the job is COMPLETING, not RUNNING."""
    args = dict(num_processes=2, status=75, stalled=0, restart=0, max_restarts=50, max_without_progress=3)
    got = verdict({0: 75, 1: 75}, **args, job_state="COMPLETING", run_time="00:05:00", time_limit="1-00:00:00")
    assert pair(got) == ("exit", 75) and "cancelled (scancel)" in got.why
    assert verdict({0: 75, 1: 75}, **args, job_state="RUNNING").action == "requeue"
    # The time limit came while the tasks saved: not the user's doing, so the saved run goes on.
    assert verdict({0: 75, 1: 75}, **args, job_state="COMPLETING", run_time="00:01:03",
                   time_limit="00:01:00").action == "requeue"
    assert verdict({0: 74, 1: 74}, **args, job_state="COMPLETING", run_time="1-00:00:00", time_limit="1-00:00:00",
                   max_in_place=2).action == "requeue"  # no restart in place in an allocation that has ended
    assert [slurm_seconds(t) for t in ("1-02:03:04", "05:06", "UNLIMITED", "")] == [93784, 306, None, None]


def test_verdict_says_plainly_when_no_process_left_a_record():
    args = dict(num_processes=2, status=137, stalled=0, restart=0, max_restarts=50, max_without_progress=3)
    why = verdict({}, **args).why
    assert why == "resumable (no process left a record [0, 1] (srun's status 137))", why
