"""What an evaluation runs: the base model, a finetune artifact's trained weights, or an outside adapter.

`subject(cfg, root)` checks the files first (checksums, the adapter's base fingerprint) and
returns the identity that enters the evaluate id with a loader; nothing is loaded until the
loader is called (rank 0 after taking the artifact lock, the other ranks at their first job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tselect import artifacts, catalog
from tselect.errors import UserError

def _check_trained_files(art: artifacts.Artifact) -> None:
    """Every file of the adapter/ (or model/) directory against the manifest checksums."""
    output = art.record.get("output", "adapter")
    rels = [rel for rel in art.manifest.get("files", {}) if rel.startswith(output + "/")]
    if not rels:
        raise UserError(f"artifact {art.id} lists no {output}/ files; remove it with `tselect rm {art.id}` "
                        "and rerun the finetune command that made it")
    for rel in rels:
        catalog.checked_path(art, rel)


def _check_base(art: artifacts.Artifact):
    """The base model an adapter was trained on, refused if its files changed since."""
    from tselect.lineage import base_model_spec
    from tselect.models import resolve_model

    ref = resolve_model(base_model_spec(art))
    if ref.fingerprint != art.inputs.get("model"):
        raise UserError(f"the base model of {art.id} ({base_model_spec(art) or 'builtin:smollm2'}) changed since "
                        "it was trained; restore it or fine-tune again")
    return ref


def _load_adapter(art: artifacts.Artifact):
    from peft import PeftModel

    from tselect.lineage import trained_path
    from tselect.models import load_model, quiet_transformers

    ref = _check_base(art)
    model, tok = load_model(ref)
    with quiet_transformers():
        model = PeftModel.from_pretrained(model, str(trained_path(art))).eval()
    return model, tok


def _load_full(art: artifacts.Artifact):
    from tselect.lineage import trained_path
    from tselect.models import load_model, resolve_model

    return load_model(resolve_model(str(trained_path(art))))


LOADERS = {"adapter": _load_adapter, "model": _load_full}  # by the finetune artifact's `output`


def subject(cfg, root: Path) -> tuple[dict[str, str], Any]:
    """(identity for the artifact id, loader returning (model, tokenizer)); loads nothing yet."""
    from tselect.models import load_model, resolve_model

    if cfg.adapter is not None:
        if cfg.finetune is not None:
            raise UserError("--adapter and --finetune both name trained weights; pass one of them")
        return _external_adapter(cfg)
    if cfg.finetune is None:
        ref = resolve_model(cfg.model)
        return {"model": ref.fingerprint}, lambda: load_model(ref)
    if cfg.model is not None:
        raise UserError("--finetune already names its base model; drop --model")
    art = catalog.resolve(root, cfg.finetune, stage="finetune")
    _check_trained_files(art)  # before any artifact directory exists
    if art.record.get("output", "adapter") == "adapter":
        _check_base(art)
    return {"finetune": art.id}, lambda: LOADERS[art.record.get("output", "adapter")](art)


def _external_adapter(cfg) -> tuple[dict[str, str], Any]:
    """A peft adapter directory made anywhere, on --model (default: the base it names)."""
    import hashlib
    import json

    from tselect.models import file_sha256, load_model, quiet_transformers, resolve_model

    directory = Path(cfg.adapter).expanduser()
    conf_path = directory / "adapter_config.json"
    if not conf_path.is_file():
        raise UserError(f"--adapter {cfg.adapter}: no adapter_config.json there; pass a peft adapter directory "
                        "(one written by `save_pretrained`, e.g. <finetune artifact>/adapter)")
    try:
        base = json.loads(conf_path.read_text()).get("base_model_name_or_path")
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"--adapter {cfg.adapter}: adapter_config.json is not valid JSON") from None
    ref = resolve_model(cfg.model or base)
    digest = hashlib.sha256()
    for f in sorted(p for p in directory.iterdir() if p.is_file() and p.name.startswith("adapter_")):
        digest.update(f"{f.name}:{file_sha256(f)}\n".encode())

    def load():
        from peft import PeftModel

        model, tok = load_model(ref)
        with quiet_transformers():
            return PeftModel.from_pretrained(model, str(directory)).eval(), tok

    return {"model": ref.fingerprint, "adapter": digest.hexdigest()}, load
