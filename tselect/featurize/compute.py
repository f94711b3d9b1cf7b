"""The compute setup of LESS rows: recorded on the feature group, and shards must agree on it.

Rows computed in bf16 on a GPU and in fp32 on a CPU differ in their low bits (and, across
library versions, possibly more), so one sharded artifact must not mix them: the first shard
records the setup, later shards from another setup are refused. torch is imported lazily.
"""

from __future__ import annotations

from pathlib import Path

from tselect.errors import UserError


def compute_setup() -> dict[str, str]:
    """What the rows' bits depend on beyond the config: compute dtype, device kind, library versions."""
    import peft
    import torch
    import transformers

    from tselect.models import _torch_dtype, default_device

    device = default_device()
    kind = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    return {"compute_dtype": str(_torch_dtype(None, device)).removeprefix("torch."), "device": kind,
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def claim_setup(group: Path, setup: dict[str, str]) -> None:
    """Record the compute setup on the feature group; a shard from another setup is refused."""
    from tselect import store

    with store.group_lock(group):
        attrs = dict(store.open_group(group).attrs)
        if "compute" in attrs and attrs["compute"] != setup:
            have = attrs["compute"]
            diff = ", ".join(f"{k} {have.get(k)} here vs {v}" for k, v in setup.items() if have.get(k) != v)
            raise UserError(f"this feature artifact's rows were computed with a different setup ({diff}); "
                            "rerun every shard on one setup, or `tselect rm` the artifact and start over")
        store.set_attrs(group, {"compute": setup})
