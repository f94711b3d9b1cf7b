"""Models: resolve a `--model` spec to a local Hugging Face directory, then load it.

A spec is `builtin:smollm2` (the default), a local causal-LM directory, or a hub id
(`org/name`, `org/name@revision`) resolved from the local Hugging Face cache without the network
(`huggingface_hub.snapshot_download(..., local_files_only=True)`); downloading needs
`--allow-download`. A hub name is not a fixed set of weights, so artifacts never hash it: the
model enters ids by the fingerprint of the resolved snapshot's files.
The embedded SmolLM2 ships as a Q4_1 GGUF; transformers keeps a GGUF-loaded model flagged as
quantized (not saveable, treated as quantized by trainers), so we convert it once into an
ordinary fp32 safetensors directory in the cache and load that from then on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tselect import assets
from tselect.errors import UserError
from tselect.files import atomic_write, flock, sha256_file

DEFAULT_MODEL = "builtin:smollm2"
BUILTIN_MODELS = ("smollm2",)  # `builtin:<name>` -> the GGUF asset of the same name
_CONVERTER_VERSION = 1  # bump when the conversion recipe changes the output
_CHUNK = 1 << 20
_LOCAL_HINT = ("pass a local Hugging Face causal-LM directory (with config.json) or a hub id in the local "
               "HF cache, or omit --model for the embedded SmolLM2")

# Files whose bytes decide what the model computes, besides config.json and the weights.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_FULL_HASH_LIMIT = 8 << 20  # weight files up to this size are hashed whole
_SAMPLES, _SAMPLE_BYTES = 16, 64 << 10  # larger ones: 16 evenly spaced 64 KiB windows


def cache_dir() -> Path:
    """`$TSELECT_CACHE`, else `~/.cache/tselect`: converted models and the GGUF hash cache."""
    return Path(os.environ.get("TSELECT_CACHE") or Path.home() / ".cache" / "tselect").expanduser()


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: the spec the user gave, a plain HF directory, and a content fingerprint."""

    spec: str
    path: Path
    fingerprint: str
    commit: str | None = None  # the hub commit a hub id resolved to; None for local and builtin models


def resolve_model(spec: str | None, revision: str | None = None) -> ModelRef:
    """Map `--model` to a local directory; `None` means the embedded SmolLM2.

    `revision` (or an `@rev` suffix) picks a branch, tag or commit of a hub id.
    """
    from tselect.data.hub import looks_like_hub_id, resolve_snapshot

    spec = spec or DEFAULT_MODEL
    if spec.startswith("builtin:"):
        return _resolve_builtin(spec)
    if looks_like_hub_id(spec):
        snap = resolve_snapshot(spec, "model", revision)
        _check_causal_lm(snap.path, spec)
        return ModelRef(spec, snap.path, fingerprint(snap.path), snap.commit)
    if revision is not None:
        raise UserError(f"--revision {revision} applies to hub ids, but --model {spec!r} is a local path; drop --revision")
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(
            f"--model {spec!r}: no such local directory, and not a hub id (org/name); "
            "pass a model directory, a hub id in the local HF cache (`hf download org/name` puts it there), "
            "or omit --model for the embedded SmolLM2")
    if not path.is_dir():
        raise UserError(f"--model {spec!r} is a file, not a directory: {_LOCAL_HINT}")
    _check_causal_lm(path, spec)
    return ModelRef(spec, path.resolve(), fingerprint(path))


def _check_causal_lm(path: Path, spec: str) -> None:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UserError(f"--model {spec!r} has no config.json: {_LOCAL_HINT}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"--model {spec!r}: cannot read {config_path} ({e}): {_LOCAL_HINT}") from e
    archs = config.get("architectures") or []
    if any(a.endswith("ForCausalLM") for a in archs):
        return
    if not archs:  # some exporters omit `architectures`; the model type still tells us
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        if config.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            return
    kind = ", ".join(archs) or f"model_type {config.get('model_type')!r}"
    raise UserError(f"--model {spec!r} is not a causal LM ({kind}): {_LOCAL_HINT}")


# --- fingerprints -------------------------------------------------------------------------------

def fingerprint(path: Path, extra: str = "") -> str:
    """sha256 over config, tokenizer files and weight identity, cheap even for 7B checkpoints.

    Weight identity is (name, size), the safetensors header (dtypes, shapes, offsets) and a
    content digest: whole files up to 8 MiB, else 16 evenly spaced 64 KiB windows. Headers and
    sizes alone do not change when same-shape weights are retrained; the sampled bytes do.
    """
    h = hashlib.sha256(f"tselect-fingerprint-v1\0{extra}\0".encode())
    h.update((path / "config.json").read_bytes())
    for name in _TOKENIZER_FILES:
        if (path / name).is_file():
            h.update(f"\0{name}\0".encode() + (path / name).read_bytes())
    for f in sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)):
        size = f.stat().st_size
        h.update(f"\0{f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if f.suffix == ".safetensors" and size >= 8:
                (n,) = struct.unpack("<Q", fh.read(8))  # little-endian u64 header length
                h.update(fh.read(min(n, size - 8)))
            _digest_content(fh, size, h)
    return h.hexdigest()


def _hash_stream(fh, h) -> None:
    while chunk := fh.read(_CHUNK):  # 1 MiB at a time: flat memory for any file size
        h.update(chunk)


def _digest_content(fh, size: int, h) -> None:
    if size <= _FULL_HASH_LIMIT:
        fh.seek(0)
        return _hash_stream(fh, h)
    step = (size - _SAMPLE_BYTES) // (_SAMPLES - 1)
    for i in range(_SAMPLES):
        fh.seek(i * step)
        h.update(fh.read(_SAMPLE_BYTES))


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered in the cache keyed by (path, size, mtime) to skip rehashing."""
    st = path.stat()
    key = os.fspath(path.resolve())
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    index_path = cache_dir() / "sha256.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    hit = index.get(key)
    if hit and {k: hit.get(k) for k in stamp} == stamp:
        return hit["sha256"]
    digest = sha256_file(path)
    index[key] = {**stamp, "sha256": digest}
    index_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(index_path, json.dumps(index, indent=1, sort_keys=True))  # last writer wins; a lost entry only costs a rehash
    return digest


# --- the embedded GGUF --------------------------------------------------------------------------

def _resolve_builtin(spec: str) -> ModelRef:
    name = spec.split(":", 1)[1]
    if name not in BUILTIN_MODELS:
        choices = ", ".join(f"builtin:{n}" for n in BUILTIN_MODELS)
        raise UserError(f"--model {spec!r} is not a built-in model: choose one of {choices}, or {_LOCAL_HINT}")
    gguf = assets.locate(name)
    digest = file_sha256(gguf)
    version = "" if _CONVERTER_VERSION == 1 else f"-v{_CONVERTER_VERSION}"  # a new recipe, a new dir
    target = cache_dir() / "models" / f"{name}-{digest[:16]}{version}"
    if not target.is_dir():  # the directory appears only by atomic rename, so present = complete
        _convert_locked(gguf, target, assets.ASSETS[name]["install"])
    return ModelRef(spec, target, fingerprint(target, extra=f"gguf:{digest}:v{_CONVERTER_VERSION}"))


@contextmanager
def _flock(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with flock(lock_path):  # blocks while another process converts
        yield


def _convert_locked(gguf: Path, target: Path, install: str) -> None:
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"reading {gguf.name} needs the `gguf` package: run `{install}`")
    with _flock(target.parent / f"{target.name}.lock"):
        if target.is_dir():
            return  # another process finished the conversion while we waited
        for stale in target.parent.glob(f"{target.name}.*.part"):  # left by a killed converter
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.", suffix=".part", dir=target.parent))
        try:
            convert_gguf(gguf, tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared between users
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF causal LM into an fp32 safetensors directory with its tokenizer."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tselect.progress import note

    note(f"converting {gguf.name} once into {out.parent} (about 25 s on 2 cores)")
    with quiet_transformers(), _no_gguf_progress():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # fp32: the GGUF kernels dequantize to fp32 anyway, and bf16 here only adds a warning.
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        # A GGUF-loaded model stays flagged as quantized and refuses save_pretrained; a fresh
        # model of the same class built from the config without that flag is an ordinary one.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        clean = type(loaded)(config)
        clean.load_state_dict(loaded.state_dict())
        clean.save_pretrained(out)
        tok.save_pretrained(out)
    source = {"gguf": os.fspath(gguf), "sha256": file_sha256(gguf), "converter": _CONVERTER_VERSION,
              "transformers": transformers.__version__, "torch": torch.__version__}
    (out / "tselect_source.json").write_text(json.dumps(source, indent=1) + "\n")


def _no_gguf_progress():
    # transformers draws the de-quantization bar with a bare tqdm that ignores its own
    # progress-bar switch; a pass-through stands in for it during the one-time conversion.
    from unittest import mock

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    return mock.patch.object(gguf_utils, "tqdm", lambda iterable, *args, **kwargs: iterable, create=True)


# --- loading ------------------------------------------------------------------------------------

@contextmanager
def quiet_transformers():
    """Silence transformers' info logs, progress bars and warnings for the duration of a load."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def default_device() -> str:
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    # Under torchrun each rank takes its own GPU (TSELECT_DEVICE_INDEX is set from LOCAL_RANK).
    # set_device too, so libraries that place tensors on "the current device" (peft's adapter
    # loading, CUDA caching, NCCL) use the rank's GPU, not cuda:0.
    index = os.environ.get("TSELECT_DEVICE_INDEX")
    if not index:
        return "cuda"
    i = int(index) % torch.cuda.device_count()
    torch.cuda.set_device(i)
    return f"cuda:{i}"


def set_threads(n: int | None = None) -> int:
    """torch intra-op threads: `n`, else `$TSELECT_THREADS`, else every core. Returns the count."""
    import torch

    raw = n if n is not None else os.environ.get("TSELECT_THREADS") or os.cpu_count() or 1
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise UserError(f"TSELECT_THREADS={raw!r} is not a positive integer: set it to a thread count such as 4")
    torch.set_num_threads(count)
    return count


def _threads_from_env() -> None:
    """Honour $TSELECT_THREADS in every stage that runs a model (torch's own default otherwise)."""
    if os.environ.get("TSELECT_THREADS"):
        set_threads()


_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # short name -> torch name


def _torch_dtype(dtype, device: str):
    import torch

    if dtype is None:
        # bf16 halves memory on GPUs; CPUs lack fast bf16 kernels, so stay in fp32 there.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype), str(dtype))
    if name not in _DTYPES.values():
        raise UserError(f"dtype {dtype!r} is not supported: use one of bf16, fp16, fp32")
    return getattr(torch, name)


def load_tokenizer(ref: ModelRef):
    """The model's tokenizer, with a pad token guaranteed.

    Batches are right-padded with an attention mask and padded labels are -100, so the pad id
    never reaches attention or the loss; reusing EOS as pad is therefore harmless and lets
    causal LMs that ship without a pad token (Llama, Mistral) batch at all.
    """
    from transformers import AutoTokenizer

    with quiet_transformers():
        try:
            tok = AutoTokenizer.from_pretrained(ref.path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load a tokenizer from {ref.path} ({_first_line(e)}): {_LOCAL_HINT}") from e
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise UserError(f"the tokenizer in {ref.path} has neither a pad nor an EOS token: "
                            "add a pad_token to its tokenizer_config.json")
        tok.pad_token = tok.eos_token
    return tok


def load_model(ref: ModelRef, dtype=None, device: str | None = None):
    """(model in eval mode on `device`, tokenizer). Defaults: cuda + bf16 if available, else cpu + fp32."""
    from transformers import AutoModelForCausalLM

    device = str(device or default_device())
    torch_dtype = _torch_dtype(dtype, device)
    _threads_from_env()
    with quiet_transformers():
        try:
            model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch_dtype, local_files_only=True)
        except Exception as e:  # transformers raises OSError/ValueError/RuntimeError/SafetensorError alike
            raise UserError(f"cannot load a causal LM from {ref.path} ({_first_line(e)}): {_LOCAL_HINT}") from e
    model.to(device)
    model.eval()
    return model, load_tokenizer(ref)


def embedder_path(name_or_path: str | None) -> Path:
    """The embedded MiniLM, a hub id resolved from the local HF cache, or a local directory."""
    from tselect.data.hub import looks_like_hub_id, resolve_snapshot

    if name_or_path in (None, "", "builtin:minilm"):
        return assets.locate("minilm")
    if looks_like_hub_id(name_or_path):
        return resolve_snapshot(name_or_path, "model").path
    return Path(name_or_path).expanduser()


def load_embedder(name_or_path: str | None = None):
    """A SentenceTransformer: the embedded all-MiniLM-L6-v2 by default, or a local ST directory."""
    from sentence_transformers import SentenceTransformer

    path = embedder_path(name_or_path)
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise UserError(f"--embedder {name_or_path!r} is not a local sentence-transformers directory "
                        "(no modules.json or config.json): pass one, or omit --embedder for the embedded MiniLM")
    _threads_from_env()
    with quiet_transformers():
        return SentenceTransformer(os.fspath(path), device=default_device(), local_files_only=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
