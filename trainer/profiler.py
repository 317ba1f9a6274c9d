"""The profiler switch: a window of train steps traced by jax.profiler into WORKDIR/profile/process-N.

config.profile_start_step = S (0: off) and config.profile_num_steps = N trace the updates that make steps S to
S + N - 1; choose S after the first step, whose compile would fill the trace. config.profile_processes "primary"
traces process 0, "all" every process (each in its own directory: jax.profiler names its files by host, and
processes on one host would overwrite each other's).

What is written (jax.profiler.start_trace in jax/_src/profiler.py; its create_perfetto_trace adds the Perfetto
file): `plugins/profile/TIME/HOST.xplane.pb`, the layout that TensorBoard's profile plugin and XProf read
(`tensorboard --logdir WORKDIR/profile`), and `perfetto_trace.json.gz`, which ui.perfetto.dev opens.
Each traced step is a StepTraceAnnotation named "train" with its step number, which
XProf's step-time views group by.
"""

from __future__ import annotations

import contextlib
import logging
import os

import jax

log = logging.getLogger(__name__)


class StepProfiler:
    def __init__(self, workdir: str, start_step: int, num_steps: int, processes: str, process_index: int):
        self.directory = os.path.join(workdir, "profile", f"process-{process_index}")
        self.first, self.last = start_step, start_step + num_steps - 1
        self.enabled = start_step > 0 and (processes == "all" or process_index == 0)
        self.active = False

    def step(self, step: int):
        """Context for the update that makes `step`: starts the trace at the window's first step, annotates
        every step inside it."""
        if not self.enabled or not self.first <= step <= self.last:
            return contextlib.nullcontext()
        if not self.active:
            os.makedirs(self.directory, exist_ok=True)
            jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
            self.active = True
        return jax.profiler.StepTraceAnnotation("train", step_num=step)

    def after(self, step: int, outputs) -> None:
        """After the update that made `step`: at the window's last step, waits for the device (so that the step
        itself is in the trace, not only its dispatch) and writes the trace."""
        if self.active and step >= self.last:
            jax.block_until_ready(outputs)
            self.stop()
            print(f"profile of steps {self.first}-{self.last}: {self.directory} (tensorboard --logdir "
                  f"{os.path.dirname(self.directory)}, or perfetto_trace.json.gz in ui.perfetto.dev)", flush=True)

    def stop(self) -> None:
        """Writes a trace in progress (also when the run ends inside the window)."""
        if self.active:
            self.active = False
            try:
                jax.profiler.stop_trace()
            except Exception as e:  # a profile is never worth the run: say so and go on
                log.warning("the profile could not be written to %s: %s", self.directory, e)
