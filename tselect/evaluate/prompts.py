"""Prompt renderings for evaluation: (tokenizer, example) -> (prompt ids, text put before each continuation).

"chat" renders everything before the final assistant turn with the chat template, as in
training; "plain" is the lm-eval cloze style: context + "\\nAnswer:", continuations after a space.
"""

from __future__ import annotations

PLAIN_CUE = "\nAnswer:"  # plain (no chat template) prompts end with this cue, lm-eval cloze style


def _chat_prompt(tok, ex) -> tuple[list[int], str]:
    """Everything before the final assistant turn, plus the generation prompt, as in training."""
    messages = list(ex.messages[:-1])
    if getattr(tok, "chat_template", None):
        out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out), ""
    # No template: the tulu rendering tselect.data.tokenize uses, one piece at a time like it.
    ids = [tok.bos_token_id] if tok.bos_token_id is not None and getattr(tok, "add_bos_token", True) else []
    for m in messages:
        ids += tok(f"<|{m['role']}|>\n{m['content'].strip()}\n", add_special_tokens=False)["input_ids"]
    return ids + tok("<|assistant|>\n", add_special_tokens=False)["input_ids"], ""


def _plain_prompt(tok, ex) -> tuple[list[int], str]:
    context = ex.meta.get("context") or ex.prompt
    return list(tok(context + PLAIN_CUE)["input_ids"]), " "


PROMPTS = {"chat": _chat_prompt, "plain": _plain_prompt}
