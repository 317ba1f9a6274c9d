"""trainer/peers.py: heartbeats between processes on the coordination service's key-value store (a fake one
here, with the two calls the monitor uses); a silent peer or a lost coordinator ends the process with exit 76."""

import time

from launch_helpers import wait_for

from trainer.exits import HUNG as EXIT_HUNG
from trainer.peers import PREFIX as PEERS
from trainer.peers import PeerMonitor


class FakeKeyValueStore:
    """The coordination service's key-value calls that trainer/peers.py uses; `down` makes them fail."""

    def __init__(self):
        self.values, self.down = {}, False

    def key_value_set(self, key, value, allow_overwrite=False):
        if self.down:
            raise RuntimeError("UNAVAILABLE: Socket closed")
        self.values[key] = value

    def key_value_try_get(self, key):
        if self.down:
            raise RuntimeError("UNAVAILABLE: Socket closed")
        if key not in self.values:
            raise RuntimeError(f"NOT_FOUND: {key}")
        return self.values[key]


def test_peer_monitor_ends_the_process_when_a_peer_goes_silent(capsys):
    store, exits = FakeKeyValueStore(), []
    me = PeerMonitor(store, 0, 3, 0.4, exit=exits.append).start()
    for beat in range(9):  # peer 2 leaves normally early on; peer 1 beats on well past the timeout, then stops
        store.values[f"{PEERS}/1"] = str(beat)
        store.values[f"{PEERS}/2"] = str(beat) if beat < 2 else "done"
        time.sleep(0.1)
    assert exits == []
    assert wait_for(lambda: exits, 2.0) and exits == [EXIT_HUNG]
    assert "process 0: process(es) [1] sent no heartbeat for 0.4 s" in capsys.readouterr().err
    me._stop.set()


def test_peer_monitor_ends_the_process_when_the_coordinator_is_gone(capsys):
    store, exits = FakeKeyValueStore(), []
    me = PeerMonitor(store, 1, 2, 0.4, exit=exits.append).start()
    for beat in range(5):
        store.values[f"{PEERS}/0"] = str(beat)
        time.sleep(0.1)
    store.down = True
    assert wait_for(lambda: exits, 2.0) and exits == [EXIT_HUNG]
    assert "process 1: the coordinator cannot be reached for 0.4 s" in capsys.readouterr().err
    me._stop.set()


def test_peer_monitor_stays_quiet_while_peers_beat_and_says_done():
    store, exits = FakeKeyValueStore(), []
    me = PeerMonitor(store, 0, 2, 0.3, exit=exits.append).start()
    for beat in range(10):
        store.values[f"{PEERS}/1"] = str(beat)
        time.sleep(0.1)
    me.stop()
    assert exits == [] and store.values[f"{PEERS}/0"] == "done"
