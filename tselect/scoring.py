"""Forward-pass scoring: per-example label-token losses and continuation log-likelihoods.

Both are batched with right padding. With right padding and a causal mask, padding sits after
every real token, so it changes neither positions nor attention of the real tokens: a batched
score equals the one-at-a-time score up to float summation order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tselect.errors import UserError
from tselect.tokens import IGNORE, label_ce, right_pad


@dataclass(frozen=True)
class TokenLosses:
    mean_ce: "object"  # float32 [B]: token-mean cross-entropy over label tokens (nan if none)
    sum_logprob: "object"  # float32 [B]: summed log-prob of the label tokens
    n_tokens: "object"  # int64 [B]: number of label tokens scored


def _model_device(model):
    return next(model.parameters()).device


def token_losses(model, input_ids, attention_mask, labels) -> TokenLosses:
    """Score label tokens (labels != -100) of a right-padded batch; no gradient.

    input_ids, attention_mask, labels: int [B, T]. Token t is predicted from positions < t, so
    logits[:, :-1] are scored against labels[:, 1:]. Log-softmax runs in float32 even when
    the model computes in bf16, so long sums stay accurate.
    """
    import torch

    device = _model_device(model)
    input_ids = input_ids.to(device)
    attention_mask = attention_mask.to(device)
    # Padded positions never count, whatever the caller put in labels there.
    labels = labels.to(device).masked_fill(attention_mask == 0, IGNORE)
    was_training = model.training
    model.eval()  # scores must not depend on dropout
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [B, T, V]
        targets = labels[:, 1:]  # [B, T-1]
        ce = label_ce(logits[:, :-1], targets)  # [B, T-1], 0 where ignored
        n = (targets != IGNORE).sum(dim=1)  # [B]
        total = ce.sum(dim=1)  # [B]
        mean = total / n.clamp(min=1)
        mean = torch.where(n > 0, mean, torch.full_like(mean, float("nan")))
    model.train(was_training)
    return TokenLosses(mean_ce=mean.cpu(), sum_logprob=(-total).cpu(), n_tokens=n.cpu())


def _pad_batch(seqs: Sequence[tuple[list[int], int]], pad_id: int):
    """Right-pad (ids, n_context) pairs into (input_ids, attention_mask, labels), each [B, T]."""
    return right_pad([(ids, [IGNORE] * n_ctx + list(ids[n_ctx:])) for ids, n_ctx in seqs], pad_id)


def _split_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace onto the continuation (as lm-eval does).

    BPE vocabularies attach a space to the following word (" Paris"), so "Answer: " + "Paris"
    scored as separate pieces would put a lone-space token at the end of the context.
    """
    stripped = context.rstrip()
    return stripped, context[len(stripped):] + continuation


def encode_pair(tokenizer, context: str, continuation: str, max_length: int) -> tuple[list[int], int]:
    """(ids, n_context): context with the tokenizer's default specials (a BOS if it adds one),
    continuation with add_special_tokens=False so no BOS lands mid-sequence."""
    context, continuation = _split_whitespace(context, continuation)
    ctx = list(tokenizer(context)["input_ids"]) if context else []
    cont = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    return fit_pair(tokenizer, ctx, cont, max_length, what=continuation)


def fit_pair(tokenizer, ctx: list[int], cont: list[int], max_length: int, what: str = "") -> tuple[list[int], int]:
    """Join context and continuation ids into (ids, n_context) of at most max_length tokens.

    An empty context gets the BOS (else EOS) token so the first continuation token has a
    prefix to be predicted from. Overlong pairs lose context tokens from the left.
    """
    if not ctx:
        ctx = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    if not cont:
        raise UserError(f"continuation {what!r} encodes to no tokens; give every choice non-empty text")
    if len(cont) >= max_length:
        raise UserError(f"a continuation of {len(cont)} tokens does not fit max_length={max_length}; "
                        "raise max_length or shorten the choice")
    ctx = ctx[-(max_length - len(cont)):]
    return ctx + cont, len(ctx)


def loglikes_from_ids(model, pairs: Sequence[tuple[list[int], int]], pad_id: int,
                      batch_size: int = 8) -> list[float]:
    """Summed log-prob of ids[n_context:] given ids[:n_context], for each (ids, n_context).

    Batched longest first so batches pad little; results come back in input order.
    """
    order = sorted(range(len(pairs)), key=lambda k: (-len(pairs[k][0]), k))
    out = [0.0] * len(pairs)
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        ids, mask, labels = _pad_batch([pairs[k] for k in chunk], pad_id)
        for k, score in zip(chunk, token_losses(model, ids, mask, labels).sum_logprob.tolist()):
            out[k] = float(score)
    return out


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def continuation_loglikes(model, tokenizer, contexts: Sequence[str], continuations: Sequence[Sequence[str]],
                          batch_size: int = 8, max_length: int | None = None) -> list[list[float]]:
    """Summed log-prob of each continuation given its context: out[i][c] for continuations[i][c].

    All (context, continuation) pairs are scored in one batched pass (see loglikes_from_ids).
    max_length defaults to the model's max_position_embeddings.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuation lists")
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    where = [(i, c) for i, conts in enumerate(continuations) for c in range(len(conts))]
    pairs = [encode_pair(tokenizer, contexts[i], continuations[i][c], max_length) for i, c in where]
    flat = loglikes_from_ids(model, pairs, pad_id_of(tokenizer), batch_size)
    out = [[0.0] * len(conts) for conts in continuations]
    for (i, c), score in zip(where, flat):
        out[i][c] = score
    return out
