"""Batched greedy generation for exact-match / F1 rows, split across ranks under torchrun.

Prompts are sorted by length and left-padded into batches (a decoder continues from the last
position, so padding goes on the left and the attention mask hides it). A row stops at EOS, and
for plain prompts also at its first newline (transformers' `stop_strings`); finished rows are
padded while the others go on, and a batch ends when all rows stopped or at max_new_tokens.
Under torchrun each rank generates a contiguous share of those batches and rank 0 gathers the
texts back into input order.
"""

from __future__ import annotations

from collections.abc import Sequence


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int):
    """(input_ids [B, T], attention_mask [B, T]) with every prompt right-aligned."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        if p:
            ids[b, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[b, width - len(p):] = 1
    return ids, mask


def generate_texts(model, tok, prompts: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int,
                   stop_at_newline: bool) -> list[str] | None:
    """Greedy continuation text of every prompt, in input order, on rank 0 (None on other ranks)."""
    from tselect import progress
    from tselect.evaluate import ranks

    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))  # little padding per batch
    # Batches are formed before splitting, so every row is generated in the same batch (same
    # padding, same kernels) as in one process: the texts do not depend on the number of ranks.
    mine = ranks.share(order, batch_size)
    batches = [mine[s:s + batch_size] for s in range(0, len(mine), batch_size)]
    texts: dict[int, str] = {}
    for batch in progress.track(batches, len(batches), "generate"):
        texts.update(zip(batch, _generate_batch(model, tok, [prompts[i] for i in batch], max_new_tokens,
                                                stop_at_newline)))
    return ranks.merged(texts, len(prompts))


def _generate_batch(model, tok, prompts, max_new_tokens: int, stop_at_newline: bool) -> list[str]:
    import torch

    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, mask = left_pad(prompts, pad)
    extra = {"stop_strings": ["\n"], "tokenizer": tok} if stop_at_newline else {}
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad, **extra)
    # [B, T + new]: the new tokens start after the padded prompt width for every row
    return [tok.decode(row[ids.shape[1]:], skip_special_tokens=True) for row in out.cpu()]
