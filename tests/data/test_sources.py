"""Real dataset containers through `datasets`, layouts, column mapping, dedup, and hub ids from a fake HF cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tselect.data import load_dataset
from tselect.errors import UserError

datasets = pytest.importorskip("datasets")

ALPACA = [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": str(2 * i + 1), "id": f"user-{i}",
           "source_task": "math"} for i in range(4)]


def jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ids(ds) -> list[str]:
    return [ex.id for ex in ds.examples]


def test_dataset_dict_needs_a_split_and_never_merges(tmp_path):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ALPACA[:3]),
                               "test": datasets.Dataset.from_list(ALPACA[3:])})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(UserError, match=r"has splits train, test; pick one with --split") as e:
        load_dataset(str(tmp_path / "dd"))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"no split 'validation'; its splits are train, test"):
        load_dataset(str(tmp_path / "dd"), split="validation")
    train, test = load_dataset(str(tmp_path / "dd"), split="train"), load_dataset(str(tmp_path / "dd"), split="test")
    assert (len(train), len(test)) == (3, 1)
    # the same rows through JSONL give the same example ids and the same content hash
    same = load_dataset(str(jsonl(tmp_path / "train.jsonl", ALPACA[:3])))
    assert ids(train) == ids(same) and train.content_hash == same.content_hash


def test_plain_save_to_disk_and_parquet_match_jsonl(tmp_path):
    datasets.Dataset.from_list(ALPACA).save_to_disk(str(tmp_path / "ds"))
    datasets.Dataset.from_list(ALPACA).to_parquet(str(tmp_path / "d.parquet"))
    ref = load_dataset(str(jsonl(tmp_path / "d.jsonl", ALPACA)))
    for spec in (tmp_path / "ds", tmp_path / "d.parquet"):
        got = load_dataset(str(spec))
        assert ids(got) == ids(ref) and got.content_hash == ref.content_hash
        assert got.examples[2].row["id"] == "user-2" and "id" not in got.examples[2].meta


def test_sharegpt_and_text_rows(tmp_path):
    sharegpt = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi?"},
                                  {"from": "gpt", "value": "Hello."}]}
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                         {"role": "assistant", "content": "Hello."}]}
    a = load_dataset(str(jsonl(tmp_path / "s.jsonl", [sharegpt]))).examples[0]
    b = load_dataset(str(jsonl(tmp_path / "c.jsonl", [chat]))).examples[0]
    assert a.id == b.id and a.messages == b.messages
    datasets.Dataset.from_list([{"text": "Water boils at 100 C."}, {"text": "Ice melts at 0 C."}]).to_parquet(
        str(tmp_path / "t.parquet"))
    text = load_dataset(str(tmp_path / "t.parquet"))
    assert [e.messages for e in text.examples] == [({"role": "assistant", "content": "Water boils at 100 C."},),
                                                   ({"role": "assistant", "content": "Ice melts at 0 C."},)]


def test_column_mapping(tmp_path):
    rows = [{"question": "2+2?", "answer": "4", "topic": "math"}]
    got = load_dataset(str(jsonl(tmp_path / "q.jsonl", rows)), columns=(("prompt", "question"), ("response", "answer")))
    ex = got.examples[0]
    assert ex.messages == ({"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"})
    assert ex.meta == {"topic": "math"} and ex.row == rows[0]
    assert ex.id == load_dataset(str(jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2?", "completion": "4"}]))).examples[0].id
    with pytest.raises(UserError, match=r"q.jsonl:1: --columns names column 'question_text'"):
        load_dataset(str(tmp_path / "q.jsonl"), columns=(("prompt", "question_text"), ("response", "answer")))
    with pytest.raises(UserError, match=r"'answer_text' is not a field tselect reads"):
        load_dataset(str(tmp_path / "q.jsonl"), columns=(("answer_text", "answer"),))


def test_dedup_keeps_the_first_and_reports(tmp_path, capsys):
    rows = [ALPACA[0], ALPACA[1], {**ALPACA[0], "id": "again"}, ALPACA[1]]
    path = jsonl(tmp_path / "dup.jsonl", rows)
    with pytest.raises(UserError, match=r"row 3 duplicates row 1 .*pass --dedup"):
        load_dataset(str(path))
    got = load_dataset(str(path), dedup=True)
    assert [e.row["id"] for e in got.examples] == ["user-0", "user-1"]
    assert "dropped 2 duplicate rows" in capsys.readouterr().err
    assert got.meta["origin"]["duplicates_dropped"] == 2


def test_corrupt_parquet_and_arrow_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(UserError, match=r"bad.parquet: cannot read it as parquet") as e:
        load_dataset(str(bad))
    assert "\n" not in str(e.value)
    datasets.Dataset.from_list(ALPACA).save_to_disk(str(tmp_path / "ds"))
    arrow = next((tmp_path / "ds").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 3])
    with pytest.raises(UserError, match=r"ds") as e:
        load_dataset(str(tmp_path / "ds"))
    assert "\n" not in str(e.value)


def test_single_file_refuses_another_split(tmp_path):
    with pytest.raises(UserError, match=r"one file, a single split; drop --split test"):
        load_dataset(str(jsonl(tmp_path / "d.jsonl", ALPACA)), split="test")


# --- hub ids resolved offline from a fake HF cache ---------------------------------------------

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def fake_repo(cache: Path, kind: str, repo: str, commits: dict[str, Path], main: str) -> None:
    """<cache>/<kind>s--org--name/{snapshots/<commit>/..., refs/main}, as `hf download` leaves it."""
    base = cache / f"{kind}s--{repo.replace('/', '--')}"
    for commit, src in commits.items():
        shutil.copytree(src, base / "snapshots" / commit)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(main)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TSELECT_ALLOW_DOWNLOAD", raising=False)
    return cache


def test_hub_dataset_from_the_local_cache(tmp_path, hf_cache):
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    datasets.Dataset.from_list(ALPACA[:3]).to_parquet(str(src / "data" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(ALPACA[3:]).to_parquet(str(src / "data" / "test-00000-of-00001.parquet"))
    fake_repo(hf_cache, "dataset", "org/alpaca-mini", {COMMIT_A: src}, COMMIT_A)
    with pytest.raises(UserError, match=r"has splits .*pick one with --split"):
        load_dataset("org/alpaca-mini")
    got = load_dataset("org/alpaca-mini", split="train")
    assert ids(got) == ids(load_dataset(str(jsonl(tmp_path / "t.jsonl", ALPACA[:3]))))
    assert got.meta["origin"]["commit"] == COMMIT_A and got.meta["origin"]["repo_id"] == "org/alpaca-mini"
    with pytest.raises(UserError, match=r"not in the local Hugging Face cache .*`hf download --repo-type dataset org/other`") as e:
        load_dataset("org/other", split="train")
    assert "huggingface-cli" not in str(e.value)


def test_hub_model_from_the_local_cache_with_revision(tmp_path, hf_cache, tiny_model_dir):
    from tselect.models import fingerprint, resolve_model

    changed = tmp_path / "changed"
    shutil.copytree(tiny_model_dir, changed)
    cfg = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**cfg, "rms_norm_eps": 1e-5}))
    fake_repo(hf_cache, "model", "org/tiny", {COMMIT_A: tiny_model_dir, COMMIT_B: changed}, COMMIT_A)
    main = resolve_model("org/tiny")
    assert main.commit == COMMIT_A and main.path == hf_cache / "models--org--tiny" / "snapshots" / COMMIT_A
    assert main.fingerprint == fingerprint(tiny_model_dir)  # identity is content: same files, same fingerprint
    other = resolve_model("org/tiny", revision=COMMIT_B)
    assert other.commit == COMMIT_B and other.fingerprint == fingerprint(changed) != main.fingerprint
    assert resolve_model(f"org/tiny@{COMMIT_B}").fingerprint == other.fingerprint
    with pytest.raises(UserError, match=r"not in the local Hugging Face cache .*`hf download org/missing`"):
        resolve_model("org/missing")


def test_csv_and_json_list_files(tmp_path):
    ref = load_dataset(str(jsonl(tmp_path / "d.jsonl", ALPACA)))
    (tmp_path / "d.json").write_text(json.dumps(ALPACA))
    datasets.Dataset.from_list(ALPACA).to_csv(str(tmp_path / "d.csv"), index=False)
    assert ids(load_dataset(str(tmp_path / "d.json"))) == ids(ref)
    # CSV cells are text: the numeric `output` "1" stays a string, an empty `input` stays ""
    assert ids(load_dataset(str(tmp_path / "d.csv"))) == ids(ref)


@pytest.mark.parametrize("make, match", [
    (lambda d: (d / "bad.parquet").write_bytes(b"PAR1 not parquet") and d / "bad.parquet", "cannot read it as parquet"),
    (lambda d: datasets.DatasetDict({"a": datasets.Dataset.from_list(ALPACA[:2]),
                                     "b": datasets.Dataset.from_list(ALPACA[2:])}).save_to_disk(str(d / "dd")) or d / "dd",
     "has splits a, b; pick one with --split"),
])
def test_cli_bad_containers_are_one_line_and_leave_no_artifact(tmp_path, make, match):
    import numpy as np

    from tests.test_cli_e2e import tselect

    spec = make(tmp_path)
    np.save(tmp_path / "p.npy", np.ones((2, 4)))
    query = jsonl(tmp_path / "q.jsonl", ALPACA[:1])
    proc = tselect("featurize", "--rep", "vectors", "--pool", spec, "--query", query, "--pool-vectors",
                   tmp_path / "p.npy", "--query-vectors", tmp_path / "p.npy", store=tmp_path / "store", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], proc.stderr
    assert not [p for p in (tmp_path / "store").glob("*/*") if p.suffix != ".lock"]
