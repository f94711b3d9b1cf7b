"""Every stage twice from scratch on CPU (separate stores, separate processes): byte-identical
index lists for every registered selector, identical adapters, curves and metrics."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.reliability import helpers as H
from tselect.select.registry import SELECTORS

BUDGET = "20"


def selector_args(name: str, features: str, scores: str | None, exclude: str) -> list:
    args = ["select", "--features", features, "--selector", name, "--budget", BUDGET, "--seed", "3"]
    needs = SELECTORS[name].needs
    if "scores" in needs:
        args += ["--scores", scores]
    if "exclude" in needs:
        args += ["--exclude", exclude]
    return args


def build_all_selections(store, chain: dict, workdir) -> dict[str, str]:
    """In one fresh process: features, a length score, then every registered selector."""
    inp = chain["inputs"]
    commands = [H.vectors_args(inp),  # {0}
                ["score", "--strategy", "length", "--pool", inp["pool"], "--model", chain["model"]],  # {1}
                ["select", "--features", "{0}", "--selector", "round_robin", "--budget", "10"]]  # {2}
    commands += [selector_args(name, "{0}", "{1}", "{2}") for name in SELECTORS]
    ids = H.tselect_many(commands, store, workdir)
    return dict(zip(SELECTORS, ids[3:]))


@pytest.fixture(scope="module")
def second_store(small_chain, tmp_path_factory):
    return tmp_path_factory.mktemp("determinism") / "store"


def test_every_selector_gives_byte_identical_indices(small_chain, second_store, tmp_path):
    first = tmp_path / "first"
    with ThreadPoolExecutor(2) as pool:  # two independent processes, two empty stores
        runs = list(pool.map(lambda st: build_all_selections(st, small_chain, st.parent / f"{st.name}-cmds"),
                             [first, second_store]))
    assert runs[0] == runs[1]  # same ids: the same configs and inputs
    for name, sid in runs[0].items():
        a = (H.artifact_dir(first, sid) / "indices.json").read_bytes()
        b = (H.artifact_dir(second_store, sid) / "indices.json").read_bytes()
        assert a == b, name
        assert len(json.loads(a)["indices"]) == int(BUDGET), name
        assert H.fingerprint(first, sid) == H.fingerprint(second_store, sid), name


def test_finetune_and_evaluate_are_identical_from_scratch(small_chain, second_store):
    st = second_store  # a store of its own, so the chain below runs from scratch in a new process
    ft_args = [a if a != small_chain["selection"] else "{1}" for a in small_chain["ft_args"]]
    ev_args = [a if a != small_chain["finetune"] else "{2}" for a in small_chain["ev_args"]]
    f, s, ft, ev = H.tselect_many([H.vectors_args(small_chain["inputs"]),
                                   ["select", "--features", "{0}", "--selector", "round_robin"], ft_args, ev_args],
                                  st, st.parent / "chain-cmds")
    assert (f, s) == (small_chain["features"], small_chain["selection"])
    assert (ft, ev) == (small_chain["finetune"], small_chain["evaluate"])
    ref = small_chain["ref"]
    for aid in (f, s, ft, ev):
        assert H.fingerprint(st, aid) == H.fingerprint(ref, aid), aid
    for rel in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "train_curve.json"):
        assert (H.artifact_dir(st, ft) / rel).read_bytes() == (H.artifact_dir(ref, ft) / rel).read_bytes(), rel
    assert (H.artifact_dir(st, ev) / "metrics.json").read_bytes() == (H.artifact_dir(ref, ev) / "metrics.json").read_bytes()


def test_adapter_config_is_written_in_a_canonical_order(tmp_path):
    """peft writes target_modules in set (hash) order, which differs between processes."""
    from tselect.training import canonical_adapter_config

    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"target_modules": ["v_proj", "q_proj", "o_proj", "k_proj"], "r": 8, "modules_to_save": None}, indent=2))
    canonical_adapter_config(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"] and config["r"] == 8
    assert not (tmp_path / "adapter_config.json.tmp").exists()


def test_less_task_on_queries_without_subtasks(tmp_path):
    inp = H.make_vectors_inputs(tmp_path / "in", 30)
    H.write_jsonl(inp["query"], H.query_rows(4, subtasks=False))
    f = H.last_line(H.tselect(*H.vectors_args(inp), store=tmp_path / "s"))
    proc = H.tselect("select", "--features", f, "--selector", "less_task", store=tmp_path / "s", check=False)
    assert proc.returncode == 0, proc.stderr[-500:]
