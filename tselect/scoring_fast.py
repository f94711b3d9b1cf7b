"""Cheap evaluation scoring: logits only where a token is scored, one encoding per MC context.

Two ideas, both exact (same math as tselect.scoring, up to float summation order):

- **Logits at scored positions only.** The transformer body runs once per batch; the output head
  (a [H, V] matmul, V ≈ 49K for SmolLM2) and the float32 log-softmax run only on the hidden states
  that predict a label token, instead of on every position of every sequence.
- **Packed multiple choice.** An item's context and all its choices go into one row:
  ``ctx | choice_0 | choice_1 | ...``. A 4D attention mask lets each choice token see the context
  and the earlier tokens of its own choice only, and position ids restart after the context for
  every choice, so each choice is scored exactly as ``ctx + choice`` alone would be, while the
  context is encoded once per item instead of once per choice.

Batches are length-bucketed (sorted by row length) so they pad little.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tselect.scoring import IGNORE, fit_pair

PAD_SEGMENT = -2  # padding: attends to itself only (keeps softmax rows finite)
CONTEXT_SEGMENT = -1


@dataclass(frozen=True)
class PackedItem:
    """One multiple-choice item as a single row."""

    ids: list[int]  # [L]: context, then every choice's tokens
    positions: list[int]  # [L]: 0..n_ctx-1, then n_ctx.. again for every choice
    segments: list[int]  # [L]: -1 on the context, c on choice c
    n_ctx: int


def pack_choices(tokenizer, ctx: list[int], conts: Sequence[list[int]], max_length: int,
                 what: Sequence[str] = ()) -> PackedItem:
    """Pack ctx + every continuation; the context is cut from the left so the longest choice fits
    max_length (tselect.scoring.fit_pair's rule, applied once for the whole item)."""
    labels = list(what) or [""] * len(conts)
    for cont, label in zip(conts, labels):
        fit_pair(tokenizer, ctx, cont, max_length, what=label)  # validates every choice
    longest = max(range(len(conts)), key=lambda c: len(conts[c]))
    ids, n_ctx = fit_pair(tokenizer, ctx, conts[longest], max_length, what=labels[longest])
    ids, positions, segments = ids[:n_ctx], list(range(n_ctx)), [CONTEXT_SEGMENT] * n_ctx
    for c, cont in enumerate(conts):
        ids += cont
        positions += range(n_ctx, n_ctx + len(cont))
        segments += [c] * len(cont)
    return PackedItem(ids, positions, segments, n_ctx)


def _body_and_head(model):
    """(decoder body returning last hidden states, output head); works through a PeftModel."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def _head_logprobs(model, head, hidden, targets):
    """log p(target) for hidden [N, H] and targets [N]; log-softmax in float32 as in training."""
    import torch.nn.functional as F

    logits = head(hidden).float()  # [N, V]: only the scored positions
    cap = getattr(model.config, "final_logit_softcapping", None)  # Gemma-2 style heads
    if cap:
        logits = cap * (logits / cap).tanh()
    return -F.cross_entropy(logits, targets, reduction="none")  # [N]


def _hidden(body, ids, mask, positions=None):
    out = body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    return out.last_hidden_state  # [B, T, H]


def _packed_mask(segments, dtype):
    """Additive 4D mask [B, 1, T, T] from segments [B, T]: query i sees key j iff j <= i and j is
    context or in i's own segment; padding sees only itself."""
    import torch

    t = segments.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()  # [T, T]
    qs, ks = segments[:, :, None], segments[:, None, :]  # [B, T, 1], [B, 1, T]
    allowed = causal & ((ks == CONTEXT_SEGMENT) | (ks == qs)) & (ks != PAD_SEGMENT) & (qs != PAD_SEGMENT)
    allowed |= torch.eye(t, dtype=torch.bool, device=segments.device)  # padding rows stay finite
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]  # [B, 1, T, T]


def choice_loglikes(model, items: Sequence[PackedItem], pad_id: int, batch_size: int = 8) -> list[list[float]]:
    """Summed log-prob of every choice of every packed item: out[i][c]."""
    import torch

    body, head = _body_and_head(model)
    device = next(model.parameters()).device
    dtype = next(body.parameters()).dtype
    out = [[0.0] * (max(it.segments) + 1) for it in items]
    order = sorted(range(len(items)), key=lambda k: (len(items[k].ids), k))  # length buckets
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            width = max(len(items[k].ids) for k in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            pos = torch.zeros((len(chunk), width), dtype=torch.long)
            seg = torch.full((len(chunk), width), PAD_SEGMENT, dtype=torch.long)
            rows, preds, targets, groups = [], [], [], []
            for b, k in enumerate(chunk):
                it = items[k]
                ids[b, : len(it.ids)] = torch.tensor(it.ids)
                pos[b, : len(it.ids)] = torch.tensor(it.positions)
                seg[b, : len(it.ids)] = torch.tensor(it.segments)
                for j in range(it.n_ctx, len(it.ids)):  # token j is predicted by j-1, or by the
                    first = it.segments[j - 1] != it.segments[j]  # context's last token for a choice's first
                    rows.append(b)
                    preds.append(it.n_ctx - 1 if first else j - 1)
                    targets.append(it.ids[j])
                    groups.append((b, it.segments[j]))
            seg = seg.to(device)
            hidden = _hidden(body, ids.to(device), _packed_mask(seg, dtype), pos.to(device))
            lp = _head_logprobs(model, head, hidden[torch.tensor(rows, device=device), torch.tensor(preds, device=device)],
                                torch.tensor(targets, device=device)).double().cpu().tolist()
            for (b, c), v in zip(groups, lp):
                out[chunk[b]][c] += v
    model.train(was_training)
    return out


def row_losses(model, input_ids, attention_mask, labels):
    """(token-mean CE [B] (nan without label tokens), label-token count [B]) of a right-padded batch,
    with the head applied only at positions that predict a label token."""
    import torch

    body, head = _body_and_head(model)
    device = next(model.parameters()).device
    labels = labels.masked_fill(attention_mask == 0, IGNORE)
    b_idx, t_idx = (labels[:, 1:] != IGNORE).nonzero(as_tuple=True)  # token t_idx+1 predicted at t_idx
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        hidden = _hidden(body, input_ids.to(device), attention_mask.to(device))
        ce = -_head_logprobs(model, head, hidden[b_idx.to(device), t_idx.to(device)],
                             labels[b_idx, t_idx + 1].to(device)).cpu()  # [N]
    model.train(was_training)
    n = torch.bincount(b_idx, minlength=labels.shape[0])  # [B]
    total = torch.zeros(labels.shape[0], dtype=torch.float32).index_add_(0, b_idx, ce)
    mean = torch.where(n > 0, total / n.clamp(min=1), torch.full_like(total, float("nan")))
    return mean, n


def answer_segment(input_ids: Sequence[int], labels: Sequence[int], prompt: Sequence[int]) -> list[int] | None:
    """The labelled answer of an encoded row when the row is exactly `prompt` + answer (+ an unlabelled
    tail, such as a template's closing newline): then the answer can ride in the prompt's packed MC row
    as one more segment, scored like the row itself. None when the row is anything else."""
    n = len(prompt)
    if list(input_ids[:n]) != list(prompt) or any(x != IGNORE for x in labels[:n]):
        return None
    scored = [t for t in range(n, len(labels)) if labels[t] != IGNORE]
    if not scored or scored[0] != n or scored[-1] - n + 1 != len(scored):  # contiguous, right after the prompt
        return None
    return list(input_ids[n : scored[-1] + 1])
