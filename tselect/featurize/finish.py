"""Finishing a sharded feature artifact: every shard records its attrs last, and only a .part
with every chunk written AND every shard's record is renamed.

Shards write disjoint chunks of one `.part` and then their attrs. Renaming as soon as every
chunk was written raced a shard still writing its attrs (FileNotFoundError on a torchrun rank),
so each shard's last write is a record "i/N" in the group attrs, and the finisher (under the
artifact lock) waits for a full set. Records also carry what only a shard knows, the rows it
tokenized that have no content, merged into zero_rows / empty_pool_rows when finishing.
"""

from __future__ import annotations

from pathlib import Path

from tselect import artifacts, store

SHARDS = "shards_finished"  # .part attrs: "i/N" -> what shard i of N found; merged away when finished


def _shard_key(shard: tuple[int, int]) -> str:
    return f"{shard[0]}/{shard[1]}"


def start_shard(root: Path, aid: str, group: Path, shard: tuple[int, int]) -> bool:
    """Withdraw this shard's record of an earlier run (it is running again, so the artifact must
    not be finished under it); False when the artifact is already finished."""
    with artifacts.locked(root, aid):  # the finisher renames the .part under this lock
        if artifacts.exists(root, aid):
            return False
        with store.group_lock(group):
            g = store.open_group(group)
            records = dict(g.attrs.get(SHARDS) or {})
            if records.pop(_shard_key(shard), None) is not None:
                g.attrs[SHARDS] = records
    return True


def record_shard(group: Path, shard: tuple[int, int], attrs: dict) -> None:
    """A shard's last write (under the group lock): the shared attrs and its own record.

    attrs["empty_rows"] ({array: [row index]}, optional) lists the rows this shard prepared that
    have no content; records are merged when the artifact is finished (merge_attrs)."""
    attrs = dict(attrs)
    record = {"empty_rows": attrs.pop("empty_rows", None)}
    records = dict(store.open_group(group).attrs.get(SHARDS) or {})
    records[_shard_key(shard)] = record
    store.set_attrs(group, {**attrs, SHARDS: records})


def _every_shard_finished(records: dict) -> bool:
    """Some N with every record i/N present (a rerun with another N brings its own full set)."""
    counts = {int(k.split("/")[1]) for k in records}
    return any(all(f"{i}/{n}" in records for i in range(n)) for n in counts)


def merge_attrs(group: Path) -> None:
    """Shards' records -> zero_rows {array: count} and empty_pool_rows (the union of every
    shard's empty rows; records of reruns overlap), and the records are dropped."""
    g = store.open_group(group)
    attrs = g.attrs.asdict()
    records = attrs.pop(SHARDS, None) or {}
    found = [r["empty_rows"] for r in records.values() if r.get("empty_rows") is not None]
    if found:
        names = list(dict.fromkeys(k for e in found for k in e))
        union = {k: sorted({i for e in found for i in e.get(k, [])}) for k in names}
        attrs["zero_rows"] = {k: len(v) for k, v in union.items()}
        attrs["empty_pool_rows"] = union.get("pool", [])
    g.attrs.put(attrs)


def complete(part: Path) -> bool:
    """Every chunk written and every shard's attrs recorded; then the records are merged.

    Called by the finisher under the artifact lock: a shard still writing its attrs has no
    record yet, so its .part is never renamed under it."""
    group = part / store.FEATURES
    if not group.is_dir():
        return False
    with store.group_lock(group):  # a shard may be writing its record right now
        if not store.features_complete(group):
            return False
        if not _every_shard_finished(store.open_group(group).attrs.get(SHARDS) or {}):
            return False
        merge_attrs(group)
    return True
