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


def contend(workdir, count: int, timeout: float, wait_seconds: float) -> tuple[list, int]:
    """`count` threads start acquire() at once: (the leases won, how many were refused)."""
    won, refused, start = [], [], threading.Barrier(count)

    def one():
        start.wait()
        try:
            won.append(Lease(str(workdir), timeout, log=lambda _: None).acquire(wait_seconds, poll_seconds=0.05))
        except LeaseHeld:
            refused.append(1)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, len(refused)


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
    won, refused = contend(tmp_path, 4, timeout=5.0, wait_seconds=0)
    assert len(won) == 1 and refused == 3
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


def test_of_waiters_on_one_stale_lease_exactly_one_takes_it_over(tmp_path, monkeypatch):
    """The race window between the staleness check and the replace widened to 0.3 s (on NFS it is a round trip
    or a delegation recall): every waiter sees the same stale lease, and still exactly one proceeds."""
    real_replace = os.replace

    def slow_replace(src, dst):
        if str(dst).endswith(FILENAME):
            time.sleep(0.3)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", slow_replace)
    for _ in range(4):
        workdir = tmp_path / f"round{_}"
        workdir.mkdir()
        plant(str(workdir), timeout_seconds=0.2)
        won, refused = contend(workdir, 4, timeout=1.0, wait_seconds=1.5)
        assert (len(won), refused) == (1, 3)
        assert json.load(open(workdir / FILENAME))["token"] == won[0].token
        won[0].release()
        assert os.listdir(workdir) == []  # no claim or unique file left behind


def test_release_never_raises_and_says_what_it_found(tmp_path, monkeypatch):
    from trainer import lease

    lines = []
    mine = Lease(str(tmp_path), 5.0, log=lines.append).acquire(0)
    ours = json.load(open(tmp_path / FILENAME))
    os.remove(tmp_path / FILENAME)  # gone between the read and the remove, as on a shared filesystem
    monkeypatch.setattr(Lease, "_observe", lambda self: (ours, (0, 0, 0)))
    mine.release()
    assert lines == [f"the lease of workdir {tmp_path} was already gone when this run released it"]
    assert lease.taken_over() is None


def test_taken_over_says_whether_this_processs_lease_is_another_runs(tmp_path):
    from trainer import lease

    mine = Lease(str(tmp_path), 5.0, log=lambda _: None).acquire(0)
    assert lease.taken_over() is None
    plant(str(tmp_path), timeout_seconds=60)  # what a takeover leaves
    assert "held by host node-b, pid 4242" in lease.taken_over()
    mine.release()  # leaves the other's lease, and this process still knows it lost it
    assert "held by host node-b" in lease.taken_over()
    os.remove(tmp_path / FILENAME)
    Lease(str(tmp_path), 5.0).acquire(0).release()
    assert lease.taken_over() is None  # a lease released as its own is no longer asked about
    gone = Lease(str(tmp_path), 5.0, log=lambda _: None).acquire(0)
    os.remove(tmp_path / FILENAME)  # another run took it over and has released it since
    gone.release()
    assert lease.taken_over() == "its lease file was removed"


def test_a_claim_left_by_a_waiter_that_died_does_not_block_the_takeover(tmp_path):
    plant(str(tmp_path), timeout_seconds=0.3)
    st = os.stat(tmp_path / FILENAME)
    (tmp_path / f"{FILENAME}.takeover-{st.st_ino}-{st.st_mtime_ns}-{st.st_size}-0").write_text("a dead waiter's")
    lines = []
    mine = Lease(str(tmp_path), 0.5, log=lines.append).acquire(wait_seconds=5, poll_seconds=0.05)
    assert len(lines) == 1 and "not renewed for" in lines[0]
    mine.release()
    assert os.listdir(tmp_path) == []


def test_a_dropped_saves_directory_is_removed_while_a_late_writer_still_writes_into_it(tmp_path):
    """A fenced save's tmp directory goes although a writer (Orbax's non-blocking metadata store) keeps writing
    into it by path; plain rmtree lists, unlinks, and then fails to remove a directory that got a new file."""
    from trainer.checkpoint import discard

    ckpts = tmp_path / "checkpoints"
    for round_ in range(20):  # a race: plain rmtree lost it in about one round of three
        tmp = ckpts / f"{round_}.orbax-checkpoint-tmp-1"
        (tmp / "state").mkdir(parents=True)
        for i in range(50):
            (tmp / "state" / f"shard{i}").write_bytes(b"x" * 64)
        stop, writes = threading.Event(), [0]

        def late_writer(path=tmp / "_CHECKPOINT_METADATA", stop=stop, writes=writes):
            while not stop.is_set():
                try:
                    path.write_text("{}")  # as Orbax writes it: no parent is created
                    writes[0] += 1
                except (FileNotFoundError, NotADirectoryError):
                    pass

        t = threading.Thread(target=late_writer)
        t.start()
        try:
            while not writes[0]:
                time.sleep(0.001)
            assert discard(str(tmp), attempts=1), round_
            time.sleep(0.01)
        finally:
            stop.set()
            t.join()
        assert os.listdir(ckpts) == [], round_
