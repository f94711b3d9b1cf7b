"""A tiny random Llama + LoRA built in code, and right-padded batches of random token ids."""

from __future__ import annotations

import warnings

import pytest
import torch

VOCAB = 64
PAD = 0


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tests share 2 cores with other jobs; one intra-op thread keeps them fast and predictable
    # (two OpenMP threads on busy cores spin in barriers: 50x slower on this tiny model).
    # Session scope, so it is in force before the module-scoped warmup/featurize fixtures.
    torch.set_num_threads(1)


def tiny_lora_model(seed: int = 0, dropout: float = 0.1):
    """Llama (hidden 32, 2 layers, 4 heads / 2 kv heads, vocab 64) with LoRA r=4 on q,v.

    init_lora_weights=False draws lora_B at random too; with the default zero B every lora_A
    gradient would be zero and half of the per-example comparison would be vacuous.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=PAD, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(seed)
        base = LlamaForCausalLM(config)
        lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "v_proj"],
                          init_lora_weights=False)
        return get_peft_model(base, lora)


def padded_batch(lengths: list[int], prompt: int = 3, seed: int = 0, width: int | None = None) -> dict:
    """Right-padded random rows; labels cover tokens after the first `prompt`, -100 elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(1, VOCAB, (n,), generator=gen)
        mask[b, :n] = 1
        labels[b, prompt:n] = ids[b, prompt:n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def row(batch: dict, b: int) -> dict:
    """Example b alone, unpadded, as a batch of one."""
    n = int(batch["attention_mask"][b].sum())
    return {k: v[b : b + 1, :n] for k, v in batch.items()}
