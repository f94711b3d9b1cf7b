"""A tiny random Llama causal LM built in code, for tests that must run offline in milliseconds.

No tiny checkpoint ships in any installed package, so we train a byte-level BPE tokenizer on a
few sentences and initialize a 2-layer Llama from a fixed seed. The chat template follows the
Tulu format (`<|user|>\\n...\\n<|assistant|>\\n...</s>`) so chat-rendering and label-masking
code paths see a real template.
"""

from __future__ import annotations

from pathlib import Path

# Enough varied text for ~120 BPE merges on top of the 256 byte symbols; it also contains the
# role markers so they get merged into a few tokens, as they would in a real vocabulary.
CORPUS = [
    "<|system|>\nYou are a helpful assistant.\n",
    "<|user|>\nWhat is the capital of France?\n<|assistant|>\nThe capital of France is Paris.</s>\n",
    "<|user|>\nGive three tips for staying healthy.\n<|assistant|>\nEat well, sleep well, move daily.</s>\n",
    "<|user|>\nAdd 2 and 3.\n<|assistant|>\n2 + 3 = 5</s>\n",
    "Question: Which gas do plants absorb from the air? Answer: carbon dioxide.",
    "Question: What is the boiling point of water at sea level? Answer: 100 degrees Celsius.",
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "Translate to French: good morning -> bonjour. Translate to German: thank you -> danke.",
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
    "Summarize: the meeting was moved to Tuesday because the room was not available.",
    "Classify the sentiment: I loved this movie, the acting was wonderful. Positive.",
    "Classify the sentiment: the food was cold and the service was slow. Negative.",
    "Science question: a plant needs water, light and air to grow. True or false? True.",
    "Math: 12 times 12 is 144; 7 times 8 is 56; 9 plus 10 is 19.",
]

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]

# Tulu style: every assistant turn ends with the EOS token, so training teaches the model to stop.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' + message['content'] + eos_token }}{% if not loop.last %}{{ '\n' }}{% endif %}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)


def _tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def _build(path: Path, seed: int, chat_template: str | None) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tok = _tokenizer()
    if chat_template is not None:
        tok.chat_template = chat_template
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    # fork_rng: seed the init without disturbing the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write a tiny Llama causal LM with a Tulu chat template into `path`; returns `path`."""
    return _build(path, seed, CHAT_TEMPLATE)


def build_tiny_model_no_template(path: Path, seed: int = 0) -> Path:
    """Same model without a chat template, for the plain-text fallback paths."""
    return _build(path, seed, None)
