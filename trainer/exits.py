"""The trainer's exit codes: what each one means, whether a scheduler should start the job again, and which
errors lead to it. The one place that defines them: trainer.main exits with them (and, with --exit_record_dir,
records each process's code: `record`), launch/requeue.py (which train.sbatch asks), launch/local.py, bench/ and
the tests read them, and a test checks launch/k8s/jobset.yaml against them.

Errors are mapped by what they mean, not by their base class (`classify`):
- our own bad-input errors (a config rule, missing or corrupt data, an unwritable workdir, no checkpoint that
  restores, a changed training stream, a workdir held by another run) -> BAD_INPUT, one message;
- a filesystem error (an `OSError`, or Orbax/TensorStore's wrapping of one) -> FILESYSTEM, resumable, once
  training has started; during setup only the transient kinds (EIO, ESTALE, a timeout, a full disk) are;
- anything else is a bug: INTERNAL_ERROR, with its traceback.

The codes that stop a job for good and that only process 0 can reach (FENCED, GAVE_UP) are above HUNG: the
other processes of the run then end with HUNG, and srun reports the highest code of its tasks.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable

DONE, BAD_INPUT, DIVERGED, INTERNAL_ERROR = 0, 1, 3, 70
FILESYSTEM, PREEMPTED, HUNG, FENCED, GAVE_UP = 74, 75, 76, 77, 78


@dataclasses.dataclass(frozen=True)
class Code:
    code: int
    name: str
    restart: bool  # whether a scheduler should run the same command again
    meaning: str


CODES = (
    Code(DONE, "done", False, "training (or the evaluation) finished"),
    Code(BAD_INPUT, "bad input", False, "a config rule, missing or corrupt data, an unwritable workdir, no "
         "checkpoint that restores, a changed training stream, or a workdir held by another run: one message "
         "names the thing and the fix; a restart would fail the same way"),
    Code(DIVERGED, "diverged", False, "a non-finite loss or gradient with nonfinite_updates=stop: not applied, "
         "nothing after it saved; the same state reproduces it"),
    Code(INTERNAL_ERROR, "internal error", False, "an unexpected exception (a bug): its traceback is printed "
         "(sysexits' EX_SOFTWARE)"),
    Code(FILESYSTEM, "filesystem error", True, "an I/O error, a stale handle, a timeout or a full disk: one "
         "message names the path, the operation and the newest complete checkpoint; resume from it "
         "(sysexits' EX_IOERR)"),
    Code(PREEMPTED, "preempted", True, "SIGTERM or SIGUSR1: the step all processes agreed on is saved "
         "(sysexits' EX_TEMPFAIL)"),
    Code(HUNG, "hung", True, "no step within step_timeout_seconds, a dead peer or a barrier timeout: nothing "
         "saved at that moment; resume from the last checkpoint"),
    Code(FENCED, "workdir taken over", False, "another run took this workdir's lease over: this run stopped "
         "before its next save and must not write there again"),
    Code(GAVE_UP, "gave up", False, "max_attempts_without_progress attempts in a row ended with a filesystem "
         "error without saving past the step they resumed from"),
)
BY_CODE = {c.code: c for c in CODES}
RESTART = tuple(c.code for c in CODES if c.restart)
FINAL = tuple(c.code for c in CODES if not c.restart and c.code != DONE)


def name(code: int | None) -> str:
    if code is None:
        return "killed"
    return BY_CODE[code].name if code in BY_CODE else ("signal " + str(code - 128) if code > 128 else "unknown")


class BadInput(Exception):
    """Something the user gave or must fix (a flag, a file, a directory); never a bug of ours."""


class WorkdirTakenOver(RuntimeError):
    """This run's workdir lease was taken over by another run (trainer/lease.py)."""


class Resumable(RuntimeError):
    """A failure that a restart repairs (its message says how), such as a final checkpoint that does not read
    back."""


# errno values that a shared filesystem returns for a while and then not: resumable even during setup.
TRANSIENT_ERRNOS = frozenset(getattr(errno, n) for n in (
    "EIO", "ESTALE", "ETIMEDOUT", "EAGAIN", "EBUSY", "EINTR", "ENOLCK", "ECONNRESET", "ECONNREFUSED",
    "ECONNABORTED", "EHOSTUNREACH", "ENETUNREACH", "ENETDOWN", "EREMOTEIO", "ENOSPC", "EDQUOT", "ENOBUFS")
    if hasattr(errno, n))
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# TensorStore (Orbax's array writer) reports an OS error inside a ValueError: `... [os_error_code='28']`.
_ERRNO_IN_TEXT = re.compile(r"os_error_code='(\d+)'|\[Errno (\d+)\]")
_PATH_IN_TEXT = re.compile(r'"(/[^"]+)"|\'(/[^\']+)\'')


@dataclasses.dataclass(frozen=True)
class Outcome:
    code: int
    message: str
    traceback: bool = False  # print the traceback (a bug)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def filesystem_errno(exc: BaseException) -> tuple[int, str | None, str] | None:
    """(errno, path, operation) of the first filesystem error in the exception's chain, found as an OSError or
    in the text of Orbax's and TensorStore's wrappings; None when it holds none. The operation is the function
    the error was raised in, with its file and line."""
    for e in _chain(exc):
        frames = traceback.extract_tb(e.__traceback__)
        operation = f"{frames[-1].name} ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
        if isinstance(e, OSError) and e.errno is not None:
            return e.errno, e.filename, operation
        m = _ERRNO_IN_TEXT.search(str(e))
        if m:
            p = _PATH_IN_TEXT.search(str(e))
            return int(m.group(1) or m.group(2)), (p.group(1) or p.group(2)) if p else None, operation
    return None


def one_line(exc: BaseException, limit: int = 400) -> str:
    """`Type: first line of the message`, without the TensorStore spec that Orbax appends to read errors."""
    text = str(exc).strip().split(" See full TensorStore details")[0]
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit]}" if text else type(exc).__name__


def classify(exc: BaseException, training_started: bool, newest_checkpoint: str) -> Outcome:
    """What an exception that ended the run means. `newest_checkpoint` describes the newest complete step (for
    the messages of filesystem errors)."""
    if isinstance(exc, WorkdirTakenOver):
        return Outcome(FENCED, str(exc))
    if isinstance(exc, Resumable):
        return Outcome(FILESYSTEM, str(exc))
    # Imported here: `python -m trainer.exits` and launch/requeue.py need neither.
    from configs.validate import ConfigError
    from data.records.codec import DataError

    if isinstance(exc, (BadInput, ConfigError, DataError)):
        return Outcome(BAD_INPUT, str(exc))
    found = filesystem_errno(exc)
    if found is not None:
        code, path, operation = found
        where = (f" on {path}" if path else "") + (f" in {operation}" if operation else "")
        if code in DISK_FULL_ERRNOS:
            return Outcome(FILESYSTEM, f"the disk is full or over its quota{where} ({one_line(exc)}). "
                           f"{newest_checkpoint}. Free space (or raise the quota), then rerun the same command: it "
                           "resumes from that step")
        if code in TRANSIENT_ERRNOS or training_started:
            return Outcome(FILESYSTEM, f"filesystem error {errno.errorcode.get(code, code)}{where} "
                           f"({one_line(exc)}). {newest_checkpoint}. Rerun the same command to resume from it")
        return Outcome(BAD_INPUT, f"{one_line(exc)}: check the path and its permissions")
    return Outcome(INTERNAL_ERROR, f"internal error, most likely a bug ({one_line(exc)}); the traceback is "
                   "above", traceback=True)


# Each process's own code, for a scheduler script that must not judge a job by srun's one status: srun returns
# the highest code of its tasks (srun(1), RETURN VALUE), so one process's 1 hides behind its peers' 76.
_record_dir: str | None = None


def record_to(directory: str | None) -> None:
    """Where `record` writes this process's exit code (None: nowhere). Set once, before anything can fail."""
    global _record_dir
    _record_dir = os.path.abspath(os.path.expanduser(os.path.expandvars(directory))) if directory else None


def record(code: int, process_index: int) -> None:
    """Writes DIR/process-<index>.json with the code, atomically; a failure to write costs only the record (the
    scheduler script then counts this process as killed)."""
    if _record_dir is None:
        return
    path = os.path.join(_record_dir, f"process-{process_index}.json")
    try:
        os.makedirs(_record_dir, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"code": code, "name": name(code), "process": process_index, "host": socket.gethostname(),
                       "pid": os.getpid(), "time": time.time()}, f)
        os.replace(path + ".tmp", path)
    except OSError as e:
        print(f"warning: could not record exit code {code} in {path} ({e})", file=sys.stderr, flush=True)


def read_records(directory: str) -> dict[int, int]:
    """{process index: code} of every process that recorded one in `directory`."""
    out = {}
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if entry.startswith("process-") and entry.endswith(".json"):
            try:
                with open(os.path.join(directory, entry)) as f:
                    got = json.load(f)
                out[int(got["process"])] = int(got["code"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # half-written by a process killed mid-write: counted as killed
    return out


def exit_hung(reason: str, process_index: int | None = None, exit: Callable[[int], None] = os._exit) -> None:
    """Says why and ends this process at once with HUNG (after recording it): the one way out of a dead peer, a
    barrier that timed out, a failed collective and a stuck step (trainer/peers.py, trainer/watchdog.py,
    trainer/main.py). Not a normal exit: a hung collective holds locks that it would wait on, and JAX's shutdown
    barrier would wait for the dead peer, then abort."""
    if process_index is None:
        import jax

        process_index = jax.process_index()
    print(f"error: process {process_index}: {reason}. Exiting with {HUNG}: restart the same command to resume from "
          "the last checkpoint", file=sys.stderr, flush=True)
    sys.stdout.flush()
    record(HUNG, process_index)
    exit(HUNG)


def table() -> str:
    """The exit-code table, as docs/training.md holds it."""
    rows = ["| code | name | restart | meaning |", "|---|---|---|---|"]
    rows += [f"| {c.code} | {c.name} | {'yes' if c.restart else 'no'} | {c.meaning} |" for c in CODES]
    return "\n".join(rows)


def restarts(code: int) -> bool:
    """Whether a scheduler should start the job again after a process status of `code`: a resumable code, or a
    death by a signal (128 + N: the OOM killer, a lost node)."""
    return code in RESTART or 128 < code < 256


def main(argv: list[str]) -> int:
    """`python -m trainer.exits restart CODE`: exit 0 when a scheduler should restart after CODE (`restarts`),
    else 1; `table` prints the table."""
    if len(argv) == 2 and argv[0] == "restart" and argv[1].lstrip("-").isdigit():
        return 0 if restarts(int(argv[1])) else 1
    if argv == ["table"]:
        print(table())
        return 0
    print("usage: python -m trainer.exits restart CODE | table", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
