"""Fault-injection launcher: `python -m tests.reliability.faults <tselect args>`.

Runs the real CLI (`tselect.cli.main`) after wrapping `os.replace`/`os.rename`, the one call
through which every durable write in a store becomes visible (zarr's LocalStore writes a temp
file and replaces it; `store.write_json`, `save_tensors` and the final `.part` rename do the same).
Nothing in tselect is changed; the process only counts those calls and, when told, kills itself
with SIGKILL at one of them, exactly as `kill -9` from outside would (no cleanup, no atexit).

Environment:
  TSELECT_FAULT_COUNT=FILE     append one line per event ("<n> <before|after> <dst>") to FILE
  TSELECT_FAULT_KILL=N:WHEN    SIGKILL at event N (1-based), WHEN = before (temp written, not yet
                               renamed: the mid-write state) or after (just renamed)
  TSELECT_FAULT_SLOW=SECONDS   sleep this long before every event (stretches the write phase so
                               that an external kill at a random time lands inside it)
  TSELECT_FAULT_KILL_STEP=N    SIGKILL when the HF Trainer starts its N-th micro-batch
                               (finetune killed mid-training, at a reproducible point)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time


def install() -> None:
    count_file = os.environ.get("TSELECT_FAULT_COUNT")
    kill = os.environ.get("TSELECT_FAULT_KILL")
    slow = float(os.environ.get("TSELECT_FAULT_SLOW") or 0)
    kill_at, kill_when = (int(kill.split(":")[0]), kill.split(":")[1]) if kill else (None, None)
    state = {"n": 0}
    lock = threading.Lock()
    log = open(count_file, "a", buffering=1) if count_file else None  # noqa: SIM115 (lives as long as the process)

    def wrap(real):
        def hooked(src, dst, *args, **kwargs):
            with lock:
                state["n"] += 1
                n = state["n"]
            if slow:
                time.sleep(slow)
            if log is not None:
                log.write(f"{n} before {os.fspath(dst)}\n")
            if n == kill_at and kill_when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            out = real(src, dst, *args, **kwargs)
            if n == kill_at and kill_when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        return hooked

    os.replace = wrap(os.replace)
    os.rename = wrap(os.rename)
    if os.environ.get("TSELECT_FAULT_KILL_STEP"):
        _kill_at_training_step(int(os.environ["TSELECT_FAULT_KILL_STEP"]))


def _kill_at_training_step(n: int) -> None:
    from transformers import Trainer

    real = Trainer.training_step
    calls = {"n": 0}

    def training_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *args, **kwargs)

    Trainer.training_step = training_step


if __name__ == "__main__":
    install()
    sys.argv = ["tselect", *sys.argv[1:]]
    from tselect.cli import main

    main()
