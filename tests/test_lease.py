"""The workdir lease (trainer/lease.py) in one process, with threads and planted lease files: who gets it,
who waits, when a lease is stale, and fencing."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from trainer.exits import WorkdirTakenOver
from trainer.lease import FILENAME, Lease, LeaseHeld


def plant(workdir, **fields):
    holder = {"host": "node-b", "boot_id": "x", "pid_namespace": "y", "pid": 4242, "pid_start": "1", "job": None,
              "started": time.time(), "token": "theirs", "timeout_seconds": 1.0, **fields}
    with open(os.path.join(workdir, FILENAME), "w") as f:
        json.dump(holder, f)
    return holder


def test_one_holder_at_a_time_and_release_frees_it(tmp_path):
    lines = []
    first = Lease(str(tmp_path), 1.0, log=lines.append).acquire(0)
    with pytest.raises(LeaseHeld) as e:
        Lease(str(tmp_path), 1.0).acquire(wait_seconds=1.5)  # renewed all along: never stale
    message = str(e.value)
    assert f"workdir {tmp_path} is in use by another run (host " in message and f"pid {os.getpid()}" in message
    first.check()
    first.release()
    assert not os.path.exists(tmp_path / FILENAME)
    Lease(str(tmp_path), 1.0).acquire(0).release()
    assert lines == [] and not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_of_runs_that_start_together_exactly_one_gets_the_lease(tmp_path):
    won, refused, start = [], [], threading.Barrier(4)

    def contend():
        start.wait()
        try:
            won.append(Lease(str(tmp_path), 5.0).acquire(wait_seconds=0))
        except LeaseHeld:
            refused.append(1)

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 3
    assert json.load(open(tmp_path / FILENAME))["token"] == won[0].token
    won[0].release()


def test_a_waiter_gets_the_lease_when_the_holder_releases_it(tmp_path):
    first = Lease(str(tmp_path), 5.0).acquire(0)
    threading.Timer(0.5, first.release).start()
    t = time.monotonic()
    Lease(str(tmp_path), 5.0).acquire(wait_seconds=10, poll_seconds=0.05).release()
    assert time.monotonic() - t < 3


def test_a_remote_lease_that_is_not_renewed_is_taken_over_after_its_timeout(tmp_path):
    plant(str(tmp_path), timeout_seconds=1.0)
    lines = []
    t = time.monotonic()
    mine = Lease(str(tmp_path), 60.0, log=lines.append).acquire(wait_seconds=30, poll_seconds=0.05)
    assert 1.0 <= time.monotonic() - t < 5  # the holder's own timeout counts, not the waiter's
    assert len(lines) == 1 and "from host node-b, pid 4242" in lines[0] and "not renewed for" in lines[0]
    assert json.load(open(tmp_path / FILENAME))["token"] == mine.token
    mine.release()


def test_an_unreadable_lease_file_is_judged_by_its_changes(tmp_path):
    (tmp_path / FILENAME).write_text("{not json")
    lines = []
    Lease(str(tmp_path), 0.5, log=lines.append).acquire(wait_seconds=10, poll_seconds=0.05).release()
    assert len(lines) == 1 and "not readable JSON" in lines[0] and "not renewed for" in lines[0]


def test_a_remote_lease_refuses_a_short_wait(tmp_path):
    plant(str(tmp_path), timeout_seconds=60.0)
    with pytest.raises(LeaseHeld, match="host node-b, pid 4242"):
        Lease(str(tmp_path), 60.0).acquire(wait_seconds=0.3, poll_seconds=0.05)


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    here = Lease(str(tmp_path), 1.0)
    holder = json.loads(here._content())
    plant(str(tmp_path), **{**holder, "pid": child.pid, "token": "theirs", "timeout_seconds": 600})
    lines = []
    t = time.monotonic()
    Lease(str(tmp_path), 1.0, log=lines.append).acquire(wait_seconds=0).release()
    assert time.monotonic() - t < 1 and f"its process {child.pid} no longer exists" in lines[0]


def test_a_live_holder_on_this_host_is_not_taken_over(tmp_path):
    first = Lease(str(tmp_path), 600.0).acquire(0)
    with pytest.raises(LeaseHeld):
        Lease(str(tmp_path), 600.0).acquire(wait_seconds=0.2, poll_seconds=0.05)
    first.release()


def test_a_holder_whose_lease_was_taken_over_is_fenced(tmp_path):
    mine = Lease(str(tmp_path), 0.3).acquire(0)
    plant(str(tmp_path), timeout_seconds=60)  # what a takeover leaves (an atomic replace)
    with pytest.raises(WorkdirTakenOver, match="lost the lease .* held by host node-b, pid 4242"):
        mine.check()
    time.sleep(0.2)  # the renewal thread found out as well, and stopped touching the other's file
    assert mine.lost is not None
    mine.release()
    assert json.load(open(tmp_path / FILENAME))["token"] == "theirs"  # release leaves another's lease alone


def test_renewal_keeps_the_file_changing(tmp_path):
    mine = Lease(str(tmp_path), 0.6).acquire(0)
    before = os.stat(tmp_path / FILENAME).st_mtime_ns
    time.sleep(0.5)
    assert os.stat(tmp_path / FILENAME).st_mtime_ns != before
    mine.release()
