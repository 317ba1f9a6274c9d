"""trainer/watchdog.py: no training step within step_timeout_seconds ends the process with exit 76; evaluations
pause it."""

import time

from launch_helpers import wait_for

from trainer.exits import HUNG as EXIT_HUNG
from trainer.watchdog import Watchdog


def test_watchdog_fires_when_no_step_completes_in_time(capsys):
    exits = []
    dog = Watchdog(0.3, process_index=1, exit=exits.append)
    time.sleep(0.5)
    assert exits == []  # not armed before the first step: compiling takes what it takes
    dog.beat(1)
    for step in range(2, 6):  # steps within the timeout keep it quiet
        time.sleep(0.1)
        dog.beat(step)
    assert exits == []
    assert wait_for(lambda: exits, 2.0) and exits[0] == EXIT_HUNG
    assert "process 1: no training step completed within 0.3 s after step 5" in capsys.readouterr().err
    dog.stop()


def test_watchdog_pauses_for_evaluation():
    exits = []
    dog = Watchdog(0.3, exit=exits.append)
    dog.beat(1)
    with dog.paused():
        time.sleep(0.8)  # a long evaluation
    time.sleep(0.1)
    assert exits == []
    dog.stop()
    off = Watchdog(0, exit=exits.append)  # 0: off
    off.beat(1)
    time.sleep(0.2)
    assert exits == [] and off._thread is None
