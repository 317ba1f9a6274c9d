"""trainer/runtime.py's layout: the flags, the JAX_* variables and SLURM's step variables decide whether a run is
multi-process and which local devices each process drives."""

from trainer.runtime import Layout


def test_layout_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "8")
    monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
    assert Layout("127.0.0.1:9", 2, 1).from_env() == Layout("127.0.0.1:9", 2, 1)  # the flags win
    got = Layout(process_id=1).from_env()  # the environment fills in what the flags leave out
    assert got == Layout("10.0.0.1:1234", 8, 1) and got.multi_process
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert not Layout().from_env().multi_process  # alone: the one-process coordinator

def test_slurm_step_layout_decides_which_gpus_a_process_drives():
    from trainer import runtime

    step = {"SLURM_PROCID": "9", "SLURM_STEP_ID": "0", "SLURM_NODEID": "2", "SLURM_STEP_TASKS_PER_NODE": "8(x2),1"}
    assert runtime.slurm_tasks_on_this_node(step) == 1
    assert runtime.slurm_tasks_on_this_node({**step, "SLURM_NODEID": "1"}) == 8
    assert runtime.slurm_tasks_on_this_node({"SLURM_NTASKS": "8"}) is None  # not inside a step
    per_gpu = {**step, "SLURM_NODEID": "0"}
    assert runtime.local_device_ids(True, per_gpu) is None  # JAX's own choice: [SLURM_LOCALID]
    assert runtime.local_device_ids(True, step) == []  # one task on the node: every GPU
    assert runtime.local_device_ids(False, per_gpu) == []  # one process in all: every GPU
    assert runtime.local_device_ids(True, {**step, "JAX_LOCAL_DEVICE_IDS": "0,1"}) is None  # JAX reads it


def test_an_allocation_shell_is_not_a_multi_process_step(monkeypatch):
    """`salloc -n 8` sets SLURM_NTASKS=8 in the shell, and sbatch's batch shell SLURM_PROCID=0 as well; a python
    run there is one process, not rank 0 of 8."""
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_PROCID", "SLURM_STEP_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert not Layout().from_env().multi_process
    # An sbatch batch shell: SLURM_PROCID=0 but no step (a real Slurm's, tests/test_real_slurm.py).
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert not Layout().from_env().multi_process
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert Layout().from_env().multi_process
