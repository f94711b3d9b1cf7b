"""Rank helpers for runs under torchrun / accelerate launch (a shared core: no stage imports).

A launcher sets RANK, WORLD_SIZE and LOCAL_RANK. Rank 0 owns everything that touches the
artifact store (lock, `.part`, manifest, the printed id); the other ranks only compute and
exchange Python objects with rank 0 through these helpers. Outside a launcher every helper is
the single-process identity (rank 0 of 1), so stages call them unconditionally.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if world_size() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group the launcher describes (nccl on GPU, gloo on CPU); idempotent.

    The HF Trainer (accelerate) finds the group already initialized and uses it, so ranks can
    exchange objects before the Trainer exists.
    """
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    atexit.register(_leave)


def _leave() -> None:
    """Tear the group down before the interpreter does: gloo's worker threads would otherwise
    outlive it, and the C++ runtime aborts the finished process (exit -6 after a good result)."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        return
    try:  # every rank reaches this point before any tears down (no op still in flight to a gone peer)
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        else:
            dist.barrier()
    except Exception:  # a peer died or left: nothing to wait for, still tear down
        pass
    dist.destroy_process_group()


_SENT = [0]  # broadcasts rank 0 has made in this process (see sent())


def sent() -> int:
    """How many broadcasts rank 0 has made: a stage that fails compares it with the count it
    started from, to tell the other ranks only while they still wait for a message."""
    return _SENT[0]


def broadcast(obj: Any = None) -> Any:
    """Rank 0's `obj` on every rank (a picklable object); the identity in one process."""
    if world_size() <= 1:
        return obj
    import torch.distributed as dist

    init()
    _SENT[0] += is_main()
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Lead:
    """Rank 0's handle inside `owned`: hands the other ranks a job and does its own share with them."""

    def __init__(self):
        self.waiting = True  # the other ranks wait in broadcast() (not inside a job's collectives)

    def job(self, msg: dict, work: Callable[[], Any]) -> Any:
        """Every other rank runs follow(msg) while this one runs work() (the two meet in collectives)."""
        broadcast({"job": msg})
        self.waiting = False  # a failure now leaves them in a collective: torchrun ends them when this rank exits
        out = work()
        self.waiting = True
        return out


def owned(lead: Callable[[Lead], str], follow: Callable[[dict], Any]) -> str:
    """A stage whose store work rank 0 owns: rank 0 runs lead(handle) -> id (lock, `.part`,
    manifest), the others never touch the store and run follow(msg) for each handle.job(msg, ...).

    Every rank returns rank 0's id. A failure on rank 0 while the others wait for a message
    reaches them as a UserError (no hang); a finished artifact costs one broadcast on every
    rank. In one process: lead(handle) with job() running work() alone.
    """
    from tselect.errors import UserError

    init()
    if not is_main():
        while "job" in (msg := broadcast()):
            follow(msg["job"])
        if "error" in msg:
            raise UserError(msg["error"])
        return msg["done"]
    handle = Lead()
    try:
        aid = lead(handle)
    except Exception as e:
        if world_size() > 1 and handle.waiting:
            broadcast({"error": str(e) if isinstance(e, UserError) else f"rank 0 failed: {type(e).__name__}: {e}"})
        raise
    broadcast({"done": aid})
    return aid


def gather(obj: Any) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank 0 (None elsewhere); [obj] in one process."""
    if world_size() <= 1:
        return [obj]
    import torch.distributed as dist

    init()
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if world_size() <= 1:
        return
    import torch.distributed as dist

    init()
    dist.barrier()


def shard(n: int) -> range:
    """This rank's share of n items: a contiguous block, so gathering in rank order restores the order."""
    size, r = world_size(), rank()
    lo, hi = n * r // size, n * (r + 1) // size
    return range(lo, hi)


def launch(launcher: str, config: Any, store: str) -> str:
    """Run one stage config as `<launcher> -m tselect run-config <file>` and return the id it prints.

    `launcher` is a command line such as "torchrun --nproc_per_node 8" (or "accelerate launch
    --num_processes 8"); the config travels as a pickle of the frozen dataclass (same code on
    both sides), the id comes back as the last line of the launched run's stdout (rank 0's).
    """
    import pickle
    import shlex
    import subprocess
    import sys
    import tempfile

    from tselect.errors import UserError

    argv = shlex.split(launcher)
    if not argv:
        raise UserError("--launcher is empty; pass a command such as \"torchrun --nproc_per_node 8\"")
    with tempfile.NamedTemporaryFile(prefix="tselect-cfg-", suffix=".pkl", delete=False) as f:
        pickle.dump(config, f)
    try:
        proc = subprocess.run([*argv, "-m", "tselect", "run-config", f.name, "--store", store],
                              stdout=subprocess.PIPE, stderr=None, text=True)  # stderr: the user's terminal
    except FileNotFoundError:
        raise UserError(f"--launcher {launcher!r}: {argv[0]} is not on PATH; use e.g. "
                        f"\"{sys.executable} -m torch.distributed.run --nproc_per_node 8\"") from None
    finally:
        os.unlink(f.name)
    lines = proc.stdout.split()
    if proc.returncode != 0 or not lines:
        raise UserError(f"the launched {type(config).__name__} run failed (exit {proc.returncode}); "
                        "its error is printed above")
    return lines[-1]
