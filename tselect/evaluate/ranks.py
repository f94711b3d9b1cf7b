"""Evaluation work split across ranks under torchrun (the identity in one process).

Rank 0 decides what to score; each heavy step is a *job*: a name from JOBS and picklable
arguments (token ids, never examples). Rank 0 broadcasts it and runs it too, every rank on its
own share, and rank 0 gathers the results back into input order. Batches are formed from the
whole input before the split (rows sorted by length, cut into batch_size chunks, each rank a
contiguous run of whole chunks), so every row is computed in the same batch, with the same padding
and kernels, as in one process: the gathered numbers are identical to a one-process run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tselect import distributed
from tselect.errors import UserError

_IN_JOB = [False]  # rank 0 is inside a job (the other ranks are in its collectives, not waiting for a message)
_SCORED = [0]  # sequences this process has run forward (rows, MC items, generation prompts)


def share(order: Sequence[int], batch_size: int) -> list[int]:
    """This rank's contiguous run of whole batches of `order` (the batches one process would form)."""
    mine = distributed.shard(-(-len(order) // batch_size))
    out = list(order[mine.start * batch_size: mine.stop * batch_size])
    _SCORED[0] += len(out)
    return out


def merged(part: dict[int, Any], n: int) -> list[Any] | None:
    """Every rank's {index: result} gathered on rank 0 as a list in index order; None on other ranks."""
    parts = distributed.gather(part)
    if parts is None:
        return None
    found = {i: v for p in parts for i, v in p.items()}
    return [found[i] for i in range(n)]


def row_losses(model, tok, rows: Sequence[tuple[list[int], list[int]]], batch_size: int):
    """(token-mean CE, label-token count) of every (input_ids, labels) row, in input order, on rank 0."""
    from tselect.scoring_fast import row_losses as batch_losses
    from tselect.tokens import right_pad

    order = sorted(range(len(rows)), key=lambda i: (len(rows[i][0]), i))  # as tokenize.length_sorted
    mine = share(order, batch_size)
    part: dict[int, tuple[float, int]] = {}
    for s in range(0, len(mine), batch_size):
        idx = mine[s:s + batch_size]
        ids, mask, labels = right_pad([rows[i] for i in idx], tok.pad_token_id)  # [B, T] each
        mean_ce, n_tokens = batch_losses(model, ids, mask, labels)  # head only at label positions
        part.update({i: (float(mean_ce[b]), int(n_tokens[b])) for b, i in enumerate(idx)})
    return merged(part, len(rows))


def choice_loglikes(model, tok, items: Sequence, batch_size: int):
    """Summed log-prob of every segment of every packed MC item (tselect.scoring_fast), on rank 0."""
    from tselect.scoring_fast import choice_loglikes as loglikes

    # choice_loglikes' own order: a run of whole chunks of it is re-chunked into the same batches
    order = sorted(range(len(items)), key=lambda k: (len(items[k].ids), k))
    mine = share(order, batch_size)
    lls = loglikes(model, [items[k] for k in mine], tok.pad_token_id, batch_size) if mine else []
    return merged(dict(zip(mine, lls)), len(items))


def _generate(model, tok, **job):
    from tselect.evaluate.generate import generate_texts

    return generate_texts(model, tok, **job)


def start_count() -> None:
    """Count this evaluation's forward sequences from zero (a process may run several)."""
    _SCORED[0] = 0


def scored_per_rank(model, tok):
    """How many sequences each rank has run forward so far, in rank order, on rank 0."""
    return merged({distributed.rank(): _SCORED[0]}, distributed.world_size())


JOBS = {"row_losses": row_losses, "choice_loglikes": choice_loglikes, "generate": _generate,
        "scored_per_rank": scored_per_rank}


def run(model, tok, job: str, **args):
    """Rank 0: every rank runs `job` on its share; returns the gathered result."""
    distributed.broadcast({"job": job, "args": args})
    _IN_JOB[0] = True
    out = JOBS[job](model, tok, **args)
    _IN_JOB[0] = False
    return out


def waiting() -> bool:
    """Whether the other ranks wait for rank 0's next message (so a failing rank 0 may send its error)."""
    return distributed.world_size() > 1 and not _IN_JOB[0]


def follow(load) -> str:
    """A rank other than 0: run the jobs rank 0 sends until it sends the id (or its error).
    `load()` -> (model, tokenizer), called at the first job; it reads files, never the store."""
    model = tok = None
    start_count()
    while True:
        msg = distributed.broadcast()
        if "done" in msg:
            return msg["done"]
        if "error" in msg:
            raise UserError(msg["error"])
        if model is None:
            model, tok = load()
        JOBS[msg["job"]](model, tok, **msg["args"])
