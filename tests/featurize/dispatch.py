"""TorchDispatchMode helpers: count aten ops, and fail any op whose tensors span two devices."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched inside the `with` block (views included)."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.ops: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        self.ops[str(func)] = self.ops.get(str(func), 0) + 1
        return func(*args, **(kwargs or {}))


class OneDevice(TorchDispatchMode):
    """Raises if one op's non-scalar tensor arguments live on more than one device.

    On CPU-only hosts, run the math on `meta` tensors next to a stray CPU tensor: meta ops
    accept mixed devices silently, so this mode is what catches a CPU tensor in CUDA math.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        flat, _ = tree_flatten((args, kwargs or {}))
        devices = {t.device for t in flat if isinstance(t, torch.Tensor) and t.dim() > 0}
        if len(devices) > 1:
            raise AssertionError(f"{func} mixes devices {sorted(map(str, devices))}")
        return func(*args, **(kwargs or {}))
