"""FLAN-style instruction templates: a normalized task record → a two-turn chat.

A template is a pair of `str.format` strings over the record's fields (see `tasks.py`) plus
derived fields:
    answer   the gold text (choices[gold], or answers[0] for open QA)
    Answer   the same, first letter upper-cased
    letter   "A".. for the gold choice
    options  "A. first\nB. second\n..." (choices listed one per line)
    or_list  "first, second or third" (choices inline)

The FIRST template of every task is its "plain" form: the assistant turn is exactly
"{answer}". Targets render their query/eval rows with it, so the user turn doubles as the
`context` for log-likelihood scoring and the query loss is the loss on the gold text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LETTERS = "ABCDEFGH"


@dataclass(frozen=True)
class Template:
    name: str
    user: str
    assistant: str


def _fields(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    choices = record.get("choices")
    if choices is not None:
        gold = record["gold"]
        out["answer"] = choices[gold]
        out["letter"] = LETTERS[gold]
        out["options"] = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
        out["or_list"] = ", ".join(choices[:-1]) + " or " + choices[-1]
    else:
        out["answer"] = record["answers"][0]
    out["Answer"] = out["answer"][:1].upper() + out["answer"][1:]
    return out


def render(template: Template, record: dict[str, Any]) -> list[dict[str, str]]:
    """[{"role": "user", ...}, {"role": "assistant", ...}] for one record."""
    f = _fields(record)
    return [{"role": "user", "content": template.user.format(**f).strip()},
            {"role": "assistant", "content": template.assistant.format(**f).strip()}]


T = Template

# Generic multiple-choice wordings, shared by the exam-style QA sets (question + choices).
_MC = (
    T("mc_options", "{question}\n\nOptions:\n{options}\n\nChoose the correct option.", "{letter}. {answer}"),
    T("mc_pick", "Pick the best answer to the question.\n\nQuestion: {question}\nChoices:\n{options}",
      "{answer}"),
)

TEMPLATES: dict[str, tuple[Template, ...]] = {
    "arc_challenge": (
        T("arc_plain", "Answer this grade-school science question.\n\n{question}", "{answer}"),
        *_MC,
        T("arc_explain", "Here is a science exam question:\n{question}\n\nWhich of {or_list} is right?",
          "The right answer is: {answer}"),
    ),
    "arc_easy": (
        T("arc_easy_plain", "Question: {question}\nGive the answer.", "{answer}"),
        *_MC,
    ),
    "openbookqa": (
        T("obqa_plain", "Use basic science facts to complete the statement.\n\n{question}", "{answer}"),
        *_MC,
        T("obqa_finish", "Finish this sentence with the most sensible option ({or_list}):\n{question} ...",
          "{question} {answer}"),
    ),
    "mmlu": (
        T("mmlu_plain", "The following is a question about {subject}.\n\n{question}", "{answer}"),
        T("mmlu_letter", "The following is a multiple choice question about {subject}.\n\n{question}\n"
          "{options}\n\nAnswer with the letter and the text of the correct option.", "{letter}. {answer}"),
        *_MC,
    ),
    "commonsense_qa": (
        T("csqa_plain", "Use common sense to answer.\n\n{question}", "{answer}"),
        *_MC,
        T("csqa_inline", "{question} Is it {or_list}?", "{Answer}."),
    ),
    "social_i_qa": (
        T("siqa_plain", "{context}\n\nQuestion: {question}", "{answer}"),
        T("siqa_options", "Read the situation and answer the question.\n\nSituation: {context}\n"
          "Question: {question}\n\n{options}", "{letter}. {answer}"),
        T("siqa_inline", "{context} {question} Possible answers: {or_list}.", "{answer}"),
    ),
    "hellaswag": (
        T("hellaswag_plain", "Continue the description.\n\n{context}", "{answer}"),
        T("hellaswag_options", "{context}\n\nHow does this most likely continue?\n{options}",
          "{letter}. {answer}"),
        T("hellaswag_topic", "Topic: {activity}\n{context}\n\nWhat happens next? Pick one of:\n{options}",
          "{answer}"),
    ),
    "winogrande": (
        T("wino_plain", "{sentence}\n\nWhat should fill the blank (_): {or_list}?", "{answer}"),
        T("wino_options", "Which option best completes the sentence?\n{sentence}\n\n{options}",
          "{letter}. {answer}"),
        T("wino_rewrite", "Rewrite the sentence with the blank filled in by {or_list}, whichever fits:\n"
          "{sentence}", "{filled}"),
    ),
    "boolq": (
        T("boolq_plain", "{passage}\n\nBased on the passage above, {question} Answer yes or no.", "{answer}"),
        T("boolq_read", "Read the text and answer the question.\n\nText: {passage}\nQuestion: {question}",
          "{Answer}."),
        T("boolq_question_first", "Question: {question}\nAnswer it with yes or no using this passage:\n"
          "{passage}", "{answer}"),
    ),
    "sst2": (
        T("sst2_plain", "Review: \"{question}\"\nIs this movie review positive or negative?", "{answer}"),
        T("sst2_sentiment", "What is the sentiment of the following sentence?\n{question}", "{Answer}."),
        T("sst2_label", "Classify the sentence as {or_list}.\n\nSentence: {question}", "{answer}"),
    ),
    "rte": (
        T("rte_plain", "{premise}\n\nDoes this mean that \"{hypothesis}\"? Answer yes or no.", "{answer}"),
        T("rte_premise", "Premise: {premise}\nHypothesis: {hypothesis}\n\nDoes the premise entail the "
          "hypothesis?", "{Answer}."),
        T("rte_claim", "Passage: {premise}\nClaim: {hypothesis}\n\nDoes the claim follow from the passage? "
          "Answer yes or no.", "{answer}"),
    ),
    "mrpc": (
        T("mrpc_plain", "Sentence 1: {sentence1}\nSentence 2: {sentence2}\n\nDo these two sentences mean the "
          "same thing?", "{answer}"),
        T("mrpc_paraphrase", "Are the following two sentences paraphrases of each other? Answer yes or no.\n"
          "\"{sentence1}\"\n\"{sentence2}\"", "{Answer}."),
        T("mrpc_same", "{sentence1}\n{sentence2}\n\nDo both sentences say the same thing?", "{answer}"),
    ),
    "cb": (
        T("cb_plain", "{premise}\n\nDoes it follow that \"{hypothesis}\"? Answer yes, no or maybe.",
          "{answer}"),
        T("cb_premise", "Premise: {premise}\nHypothesis: {hypothesis}\n\nIs the hypothesis true given the "
          "premise? Choose from {or_list}.", "{Answer}."),
        T("cb_claim", "Read the text and decide whether the claim holds (yes, no or maybe).\n\n"
          "Text: {premise}\nClaim: {hypothesis}", "{answer}"),
    ),
    "copa": (
        T("copa_plain", "{premise}\n\nWhat was the {relation}?\n{options}", "{answer}"),
        T("copa_connector", "Complete the sentence: \"{clause} {connector} ...\"\n\n{options}", "{answer}"),
        T("copa_letter", "Which is the more likely {relation} of this: \"{premise}\"\n\n{options}",
          "{letter}. {answer}"),
    ),
    "nq_open": (
        T("nq_plain", "{question}", "{answer}"),
        T("nq_answer", "Answer this question: {question}", "{Answer}."),
        T("nq_short", "Give a short answer.\nQ: {question}", "{answer}"),
    ),
    "trivia_qa": (
        T("trivia_plain", "Trivia question: {question}", "{answer}"),
        T("trivia_bare", "{question}", "{Answer}."),
        T("trivia_sentence", "Answer the following trivia question. {question}", "The answer is {answer}."),
    ),
    "basic_arithmetic": (
        T("arith_plain", "Calculate {question}.", "{answer}"),
        T("arith_equation", "What is {question}?", "{question} = {answer}"),
        T("arith_options", "Which of these is the value of {question}?\n{options}", "{letter}. {answer}"),
    ),
    "sciq": (
        T("sciq_plain", "Answer this science question.\n\nQuestion: {question}", "{answer}"),
        T("sciq_support", "{support}\n\nQuestion: {question}", "{answer}"),
        *_MC,
    ),
    "piqa": (
        T("piqa_plain", "Goal: {question}\nHow would you achieve this goal?", "{answer}"),
        T("piqa_options", "Which solution is more sensible for this goal?\nGoal: {question}\n\n{options}",
          "{letter}. {answer}"),
        T("piqa_how", "How do you do this: {question}\nPick one of:\n{options}", "{answer}"),
    ),
}
