"""Per-process input telemetry (trainer/telemetry.py): the per-host and per-process summaries, and a log that
never costs the run. The end-to-end check with a slowed process is in tests/test_multihost.py."""

from trainer import telemetry


def rec(step, process, host, wait, videos):
    return telemetry.record(step, process, wait, videos, host)


def test_hosts_and_processes_come_slowest_first():
    records = [rec(s, p, h, w, v) for s in (1, 2) for p, h, w, v in
               ((0, "a", 0.1, 10.0), (1, "a", 0.2, 10.0), (2, "b", 0.6, 10.0), (3, "b", 0.0, 10.0))]
    hosts = telemetry.hosts(records)
    assert [(h.name, h.processes, h.videos_per_sec) for h in hosts] == [("b", 2, 20.0), ("a", 2, 20.0)]
    assert round(hosts[0].data_wait_share, 6) == 0.3  # the mean over b's processes
    assert [p.name for p in telemetry.processes(records)] == ["b process 2", "a process 1", "a process 0",
                                                              "b process 3"]
    # Equal waits (the preflight, where every process only reads): the fewest videos per second first.
    reading = [rec(0, 0, "a", 1.0, 50.0), rec(0, 1, "b", 1.0, 30.0), rec(0, 2, "b", 1.0, 30.0)]
    assert [(h.name, h.videos_per_sec) for h in telemetry.hosts(reading)] == [("a", 50.0), ("b", 60.0)]


def test_the_report_marks_the_slowest(tmp_path):
    for p, wait in ((0, 0.05), (1, 0.7)):
        log = telemetry.TelemetryLog(str(tmp_path), p)
        for step in (1, 2, 3):
            log.write(rec(step, p, "node-1", wait, 8.0))
        log.close()
    (tmp_path / "telemetry" / "process-1.jsonl").open("a").write('{"t": 1, "step"')  # cut short by a kill
    lines = telemetry.format_summary(telemetry.summary(telemetry.read(str(tmp_path))))
    assert lines[1].split() == ["node-1", "data", "wait", "37.5%", "16.0", "videos/s"]  # one host: no mark
    assert "node-1 process 1" in lines[2] and lines[2].endswith("<- slowest process")


def test_a_write_that_fails_costs_one_warning(tmp_path, capsys):
    (tmp_path / "telemetry").write_text("a file where the directory should be")
    log = telemetry.TelemetryLog(str(tmp_path), 0)
    for step in (1, 2):
        log.write(rec(step, 0, "h", 0.0, 1.0))
    log.close()
    out = capsys.readouterr().out
    assert out.count("warning: cannot write") == 1 and "telemetry" in out
