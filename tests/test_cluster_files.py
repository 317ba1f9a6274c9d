"""The cluster files that no test can run here: the Kubernetes manifests (checked against trainer/exits.py and
against the pod-failure-policy and JobSet rule semantics their comments cite), the image's build file, and the
pinned CUDA environment."""

import os
import re

import pytest
import yaml
from conftest import REPO

from trainer import exits

# --------------------------------------------------------------------------------------------- Kubernetes


def load_manifest(name: str) -> dict:
    with open(os.path.join(REPO, "launch", "k8s", name)) as f:
        return yaml.safe_load(f)


def test_jobset_wires_the_coordinator_and_the_exit_codes():
    jobset = load_manifest("jobset.yaml")
    name, (rjob,) = jobset["metadata"]["name"], jobset["spec"]["replicatedJobs"]
    job = rjob["template"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    port = container["ports"][0]["containerPort"]
    # JobSet's pod names: <jobset>-<replicated job>-<job index>-<pod index>.<jobset> (the headless service).
    assert env["JAX_COORDINATOR_ADDRESS"] == f"{name}-{rjob['name']}-0-0.{name}:{port}"
    assert int(env["JAX_NUM_PROCESSES"]) == job["parallelism"] == job["completions"]
    assert job["completionMode"] == "Indexed" and job["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    assert "job-completion-index" in env["JAX_PROCESS_ID"]["fieldRef"]["fieldPath"]
    assert container["command"] == ["python", "-m", "trainer.main"]
    assert any(a.startswith("--workdir=") for a in container["args"])
    assert pod["terminationGracePeriodSeconds"] >= 60


def test_jobset_restarts_preemptions_outside_the_failure_budget_and_never_restarts_final_codes():
    """Kubernetes' pod failure policy puts "matching FailJob rule at index N" in the Job's failure message; JobSet
    (v0.10+) matches it with onJobFailureMessagePatterns. Each exit code must land on the rule meant for it."""
    jobset = load_manifest("jobset.yaml")
    rules = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["podFailurePolicy"]["rules"]
    set_rules = jobset["spec"]["failurePolicy"]["rules"]
    assert all(r["action"] == "FailJob" for r in rules)

    def jobset_action(code: int | None, disrupted: bool = False) -> str:
        for index, rule in enumerate(rules):  # the first rule that matches, as the Job controller applies them
            codes = rule.get("onExitCodes", {})
            if code is not None and code in codes.get("values", []) and codes.get("operator") == "In" or (
                    disrupted and any(c["type"] == "DisruptionTarget" for c in rule.get("onPodConditions", []))):
                message = f"Container trainer for pod default/p failed with exit code {code} matching FailJob " \
                          f"rule at index {index}"
                for r in set_rules:
                    if "PodFailurePolicy" in r["onJobFailureReasons"] and any(
                            re.search(p, message) for p in r["onJobFailureMessagePatterns"]):
                        return r["action"]
                return "RestartJobSet"
        return "RestartJobSet"  # backoffLimit 0: BackoffLimitExceeded, the default action, counted

    for code in exits.FINAL:
        assert jobset_action(code) == "FailJobSet", code
    assert jobset_action(exits.PREEMPTED) == "RestartJobSetAndIgnoreMaxRestarts"
    assert jobset_action(137, disrupted=True) == "RestartJobSetAndIgnoreMaxRestarts"  # killed while draining
    for code in (exits.FILESYSTEM, exits.HUNG, 137):
        assert jobset_action(code) == "RestartJobSet", code  # counted against maxRestarts
    assert jobset["spec"]["failurePolicy"]["maxRestarts"] > 0


def test_manifests_reach_infiniband_and_name_a_built_image():
    dockerfile = open(os.path.join(REPO, "launch", "k8s", "Dockerfile")).read()
    assert "make install-cuda" in dockerfile and "constraints-cuda.txt" in dockerfile
    for name in ("jobset.yaml", "preflight.yaml"):
        pod = load_manifest(name)["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert "IPC_LOCK" in container["securityContext"]["capabilities"]["add"], name
        limits = container["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 8 and any(k.startswith("rdma/") for k in limits), name
        assert container["image"].endswith(":TAG") and "latest" not in container["image"], name
    preflight = load_manifest("preflight.yaml")["spec"]["replicatedJobs"][0]["template"]["spec"]
    training = load_manifest("jobset.yaml")["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert preflight["parallelism"] == training["parallelism"]  # the same shape as the job it vouches for
    assert preflight["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "launch.preflight.checks"]


def test_cuda_environment_is_pinned_in_its_own_constraints_file():
    lines = [line.strip() for line in open(os.path.join(REPO, "constraints-cuda.txt"))
             if line.strip() and not line.startswith("#")]
    pins = dict(line.split("==") for line in lines)
    assert len(pins) == len(lines)  # every line an exact pin
    jax_version = [line.split("==")[1].strip() for line in open(os.path.join(REPO, "constraints.txt"))
                   if line.startswith("jax==")][0]
    assert pins["jax-cuda12-plugin"] == pins["jax-cuda12-pjrt"] == jax_version
    assert {"nvidia-cudnn-cu12", "nvidia-nccl-cu12", "nvidia-cublas-cu12"} <= set(pins)
    makefile = open(os.path.join(REPO, "Makefile")).read()
    assert "-c constraints.txt -c constraints-cuda.txt" in makefile and "install-cuda:" in makefile


def _commands(text: str) -> list[str]:
    """Shell lines with their continuations joined, comment markers and repeated spaces removed."""
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip().lstrip("#").strip()
        current = f"{current} {line}".strip() if current else line
        if current.endswith("\\"):
            current = current[:-1].strip()
            continue
        out.append(" ".join(current.split()))
        current = ""
    return out


@pytest.mark.parametrize("page,start,end", [("README.md", "## A SLURM cluster", "## Documentation"),
                                             ("docs/clusters.md", "## SLURM on H800 nodes", "**The preflight**")])
def test_documented_cluster_walkthroughs_use_the_scripts_own_commands(page, start, end):
    """Every command of the README's and the cluster page's SLURM walk-through that runs one of our scripts is
    the usage line that script documents (and its test runs)."""
    text = open(os.path.join(REPO, page)).read()
    section = text[text.index(start):text.index(end)]
    walk = _commands(section.split("```bash")[1].split("```")[0])
    ours = [c for c in walk if c.startswith(("bash ", "make ", "TFDS_DIR=", "DATA_DIR="))]
    assert len(ours) == 5, ours  # install, download, convert, preflight, train
    sources = ["Makefile", "data/download_movi.sh", "launch/slurm/convert.sbatch", "launch/slurm/preflight.sbatch",
               "launch/slurm/train.sbatch"]
    documented = set()
    for path in sources:
        documented.update(_commands(open(os.path.join(REPO, path)).read()))
    for command in ours:
        assert any(command in line for line in documented), command
