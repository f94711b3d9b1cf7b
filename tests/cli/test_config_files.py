

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
