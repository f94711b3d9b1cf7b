"""Batched left-padded generation: same texts as one prompt at a time; same metrics on 2 ranks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from tselect.evaluate.generate import generate_texts, left_pad  # noqa: E402

GEN_ROWS = [{"prompt": p, "completion": a, "answers": [a]} for p, a in [
    ("Add 2 and 3.", "5"), ("Capital of France?", "Paris"), ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("Say hello.", "hello"), ("What is 12 times 12?", "144"), ("Which sport uses a shuttlecock?", "badminton"),
    ("Boiling point of water?", "100 degrees"), ("Translate good morning to French.", "bonjour")]]


def test_left_pad_right_aligns_every_prompt():
    ids, mask = left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("stop_at_newline", [False, True])
def test_batched_generation_matches_one_prompt_at_a_time(tiny_model_dir, stop_at_newline):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = [tok(r["prompt"] + "\nAnswer:")["input_ids"] for r in GEN_ROWS]
    batched = generate_texts(model, tok, prompts, max_new_tokens=6, batch_size=3, stop_at_newline=stop_at_newline)
    alone = [generate_texts(model, tok, [p], max_new_tokens=6, batch_size=1, stop_at_newline=stop_at_newline)[0]
             for p in prompts]
    assert batched == alone
    assert any(t for t in batched)  # something was generated
    if stop_at_newline:  # a row stops at its first newline (the stop string may end the text)
        assert all("\n" not in t.rstrip("\n") for t in batched)


@pytest.mark.slow
@pytest.mark.parametrize("metrics", ["all", "loss"])
def test_evaluate_on_two_ranks_gives_the_metrics_of_one_process(tmp_path, toy_data, tiny_model_dir, metrics):
    """Every measurement (query loss, held-out loss, multiple choice, generation) split across 2 CPU
    ranks: metrics.json equals one process's exactly, and rank 0 alone prints the id."""
    from tests.evaluate.test_evaluate import EVAL_ROWS

    _, query = toy_data
    rows = EVAL_ROWS + [r for r in GEN_ROWS if r["prompt"] not in {e["prompt"] for e in EVAL_ROWS}]  # no repeats
    ev = tmp_path / "eval.jsonl"
    ev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {"OMP_NUM_THREADS": "1", "TSELECT_THREADS": "1", "TSELECT_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"}
    # batch 3: 2 query rows, 3 MC items, 11 loss rows, 7 generation rows give uneven shares
    args = ["-m", "tselect", "evaluate", "--target", str(query), "--eval-data", str(ev), "--model", str(tiny_model_dir),
            "--prompt-format", "plain", "--max-new-tokens", "6", "--batch-size", "3", "--metrics", metrics]
    out = {}
    for name, launch in [("two", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]), ("one", [])]:
        proc = subprocess.run([sys.executable, *launch, *args, "--store", str(tmp_path / name)], capture_output=True,
                              text=True, env=env, timeout=300)
        assert proc.returncode == 0, [line for line in proc.stderr.splitlines() if "rror" in line][:20]
        ids = proc.stdout.split()
        assert len(ids) == 1, proc.stdout  # rank 0 alone prints
        art = tmp_path / name / "evaluate" / ids[0]
        out[name] = (ids[0], json.loads((art / "metrics.json").read_text()),
                     json.loads((art / "manifest.json").read_text())["record"]["scored_per_rank"])
    assert out["two"][0] == out["one"][0]
    (n,), split = out["one"][2], out["two"][2]
    assert len(split) == 2 and min(split) > 0 and sum(split) == n  # both ranks ran forward passes, none twice
    two, one = out["two"][1], out["one"][1]
    assert two == one  # bit for bit: every row is scored in the same batch as in one process
    assert one["query"]["n"] == 2 and one["eval"]["loss"]["n"] == len(rows) == 11
    if metrics == "all":
        assert one["eval"]["mc"]["n"] == 3 and one["eval"]["generation"]["n"] == 7


def test_rank_shares_are_whole_batches_of_the_one_process_order(monkeypatch):
    from tselect.evaluate.ranks import share

    order = [4, 0, 6, 1, 5, 2, 3]  # 7 rows, batch 2: batches [4,0] [6,1] [5,2] [3]
    for world in (1, 2, 3, 5):
        monkeypatch.setenv("WORLD_SIZE", str(world))
        parts = []
        for r in range(world):
            monkeypatch.setenv("RANK", str(r))
            parts.append(share(order, 2))
        assert [k for part in parts for k in part] == order
        assert all(len(part) % 2 == 0 for part in parts[:-1] if part)  # only the last batch is short
