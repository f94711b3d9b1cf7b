"""--config files on stage commands (precedence, unknown keys, formats) and experiment TOMLs
validated completely by `tselect run --dry-run`, which marks cached cells."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_cli_e2e import last_line, tselect


@pytest.fixture
def features(tmp_path, store, toy_data):
    pool, query = toy_data
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.normal(size=(24, 4)))
    np.save(tmp_path / "q.npy", rng.normal(size=(2, 4)))
    return last_line(tselect("featurize", "--rep", "vectors", "--pool", pool, "--query", query, "--pool-vectors",
                             tmp_path / "p.npy", "--query-vectors", tmp_path / "q.npy", store=store))


def _select(store, *args):
    out = tselect("select", *args, "--json", store=store)
    return json.loads(out.stdout)["config"]


@pytest.mark.parametrize("suffix,text", [
    (".toml", 'selector = "topk"\nbudget = "5"\nseed = 3\n'),
    (".json", '{"selector": "topk", "budget": "5", "seed": 3}'),
    (".toml", '[featurize]\nrep = "rds"\n[select]\nselector = "topk"\nbudget = "5"\nseed = 3\n'),  # one table per command
])
def test_config_values_and_cli_precedence(tmp_path, store, features, suffix, text):
    cfg = tmp_path / f"sel{suffix}"
    cfg.write_text(text)
    from_file = _select(store, "--features", features, "--config", cfg)
    assert (from_file["selector"], from_file["budget"], from_file["seed"]) == ("topk", 5, 3)
    # flags given on the command line win over the file, wherever they stand
    over = _select(store, "--budget", "7", "--features", features, "--config", cfg)
    assert (over["selector"], over["budget"], over["seed"]) == ("topk", 7, 3)
    direct = _select(store, "--features", features, "--selector", "topk", "--budget", "5", "--seed", "3")
    assert direct == from_file  # same config, same artifact


def test_config_keys_with_dashes_and_features_from_file(tmp_path, store, toy_data):
    pool, query = toy_data
    rng = np.random.default_rng(1)
    np.save(tmp_path / "p.npy", rng.normal(size=(24, 4)))
    np.save(tmp_path / "q.npy", rng.normal(size=(2, 4)))
    cfg = tmp_path / "f.toml"
    cfg.write_text(f'rep = "vectors"\npool = "{pool}"\nquery = "{query}"\npool-vectors = "{tmp_path / "p.npy"}"\n'
                   f'query_vectors = "{tmp_path / "q.npy"}"\n')
    out = json.loads(tselect("featurize", "--config", cfg, "--json", store=store).stdout)
    assert out["config"]["rep"] == "vectors" and out["record"]["n_pool"] == 24


def test_config_unknown_key_is_one_line(tmp_path, store, features):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('selector = "topk"\nbudgte = 5\n')
    proc = tselect("select", "--features", features, "--config", cfg, store=store, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'budgte'" in lines[0] and "budget" in lines[0] and "selector" in lines[0]
    cfg.write_text("selector = [")
    proc = tselect("select", "--features", features, "--config", cfg, store=store, check=False)
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr
    proc = tselect("select", "--features", features, "--config", tmp_path / "missing.toml", store=store, check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_verbose_shows_config_values(tmp_path, store, features):
    cfg = tmp_path / "sel.toml"
    cfg.write_text('selector = "topk"\nbudget = "5"\n')
    loud = tselect("-v", "select", "--features", features, "--config", cfg, store=store)
    assert "--config" in loud.stderr and "selector='topk'" in loud.stderr
    quiet = tselect("select", "--features", features, "--config", cfg, store=store)
    assert "selector='topk'" not in quiet.stderr and quiet.stdout == loud.stdout


def test_yaml_config_or_a_one_line_hint(tmp_path, store, features):
    import importlib.util

    cfg = tmp_path / "sel.yaml"
    cfg.write_text("selector: topk\nbudget: '5'\nseed: 3\n")
    proc = tselect("select", "--features", features, "--config", cfg, "--json", store=store, check=False)
    if importlib.util.find_spec("yaml") is None:
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            f"error: --config {cfg}: YAML needs pyyaml (pip install pyyaml); or use TOML/JSON"]
    else:
        conf = json.loads(proc.stdout)["config"]
        assert (conf["selector"], conf["budget"], conf["seed"]) == ("topk", 5, 3)
    other = tmp_path / "sel.ini"
    other.write_text("x")
    proc = tselect("select", "--features", features, "--config", other, store=store, check=False)
    assert proc.returncode == 2 and "name it .toml, .yaml or .json" in proc.stderr
