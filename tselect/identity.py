"""The one rule that turns a stage config into the `config` part of its artifact id.

Every field of a config is hashed unless its class names it in `NOT_HASHED` (field → reason),
so a new field changes the id by default. Fields are excluded only when what they point at
enters the id another way: data by content hash, models by content fingerprint, artifacts by
id (all in the `inputs` of `artifacts.compute_id`), or when they only say how to run, not what
to compute. tests/test_identity.py checks that every field of every stage config is either
hashed or excluded with a reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def not_hashed(cls_or_cfg: Any) -> dict[str, str]:
    """The config class's declared exclusions: field name → why it is not part of the id."""
    return dict(getattr(cls_or_cfg, "NOT_HASHED", {}))


def hashed(cfg: Any, also_excluded: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    """cfg's fields minus NOT_HASHED (and `also_excluded`, e.g. options a strategy ignores),
    plus `extra` constants such as a format version; nested dataclasses become dicts."""
    skip = set(not_hashed(cfg)) | set(also_excluded)
    out = {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in skip}
    return {**out, **extra}


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
