"""The evaluate stage: a base model (± a finetune artifact) on a target's eval and query splits.

- Query loss: each query example's token-mean cross-entropy on its answer tokens (the same
  encoding and masking as training), averaged over examples, as in TIS's query-CE diagnostic.
- Eval rows with `choices`/`gold` meta: log-likelihood multiple choice, acc and acc_norm
  (length-normalized by characters, see tselect.metrics.mc_predict).
- Eval rows with `answers` meta: greedy generation scored by exact match, token F1 and, when
  the gold is a number, numeric match (GSM8K style).
Per-example results are kept in metrics.json; the summary also goes into the manifest record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tselect import artifacts, identity, progress, store
from tselect.data.tokenize import MAX_LENGTH
from tselect.errors import UserError
from tselect.metrics import binomial_se, exact_match, extract_number, mc_accuracy, token_f1

PLAIN_CUE = "\nAnswer:"  # plain (no chat template) prompts end with this cue, lm-eval cloze style


@dataclass(frozen=True)
class EvaluateConfig:
    target: str = "builtin:sciq"
    """Query split: builtin:<task> or a file; its loss is the query loss."""
    eval_data: str | None = None
    """Eval split; None = <target>:eval for builtin targets, else no eval split."""
    finetune: str | None = None
    """Finetune artifact id to evaluate; None = the base model (zero-shot)."""
    model: str | None = None
    """Base model dir when no finetune is given; None = the embedded SmolLM2 (with --adapter: the
    adapter's base_model_name_or_path)."""
    adapter: str | None = None
    """A peft adapter directory (any, not only tselect's) applied to `model`."""
    fmt: str | None = None
    """Row format of target/eval files (chat, sharegpt, alpaca, prompt, text); None = auto-detect."""
    prompt_format: str = "chat"
    """"chat": prompts rendered with the chat template, as in training; "plain": context + "\\nAnswer:"."""
    limit: int | None = None
    """Use only the first N eval rows and the first N query rows."""
    batch_size: int = 8
    """Sequences per forward pass."""
    max_length: int = MAX_LENGTH
    """Token limit per scored sequence (contexts are cut from the left)."""
    max_new_tokens: int = 32
    """Generation length for rows scored by exact match / F1."""
    split: str | None = None
    """Split of a target DatasetDict or hub dataset (the rows enter the id by content)."""
    eval_split: str | None = None
    """Split of the eval data, likewise."""
    columns: tuple[tuple[str, str], ...] = ()
    """Column mapping (field, column) of target and eval files."""

    metrics: str = "all"
    """"all": query loss, held-out loss and task metrics; "loss": query and held-out loss only."""
    shots: int = 0
    """Few-shot: K solved examples from the target's query split before each eval item (0 = zero-shot)."""
    shot_seed: int = 0
    """Seed of the draw of the K shots."""

    NOT_HASHED: ClassVar[dict[str, str]] = {
        "target": "enters the id by content hash (inputs: query)", "eval_data": "enters the id by content hash (inputs: eval)",
        "finetune": "artifact id in the inputs", "model": "enters the id by content fingerprint (inputs), never by path",
        "adapter": "enters the id by the sha256 of its files (inputs: adapter), never by path",
        "fmt": "only parses the data, whose content hashes are inputs",
        "split": "the rows it picks enter the id by content hash", "eval_split": "the rows it picks enter the id by content hash", "columns": "the rows it picks enter the id by content hash"}

    def __post_init__(self):
        if self.metrics not in MEASURES:
            raise ValueError(f"--metrics {self.metrics!r} is unknown; use one of {', '.join(MEASURES)}")
        if self.prompt_format not in PROMPTS:
            raise ValueError(f"--prompt-format {self.prompt_format!r} is unknown; use one of {', '.join(PROMPTS)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.shots < 0:
            raise ValueError(f"--shots must be >= 0, got {self.shots}")
        if self.batch_size < 1 or self.max_length < 8:
            raise ValueError(f"--batch-size {self.batch_size} / --max-length {self.max_length}: need >= 1 / >= 8")


# --- prompts: (tokenizer, example) -> (prompt ids, text put before each continuation) -------------

def _chat_prompt(tok, ex) -> tuple[list[int], str]:
    """Everything before the final assistant turn, plus the generation prompt, as in training."""
    messages = list(ex.messages[:-1])
    if getattr(tok, "chat_template", None):
        out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out), ""
    # No template: the tulu rendering tselect.data.tokenize uses, one piece at a time like it.
    ids = [tok.bos_token_id] if tok.bos_token_id is not None and getattr(tok, "add_bos_token", True) else []
    for m in messages:
        ids += tok(f"<|{m['role']}|>\n{m['content'].strip()}\n", add_special_tokens=False)["input_ids"]
    return ids + tok("<|assistant|>\n", add_special_tokens=False)["input_ids"], ""


def _plain_prompt(tok, ex) -> tuple[list[int], str]:
    context = ex.meta.get("context") or ex.prompt
    return list(tok(context + PLAIN_CUE)["input_ids"]), " "


PROMPTS = {"chat": _chat_prompt, "plain": _plain_prompt}


# --- the three measurements --------------------------------------------------------------------

def query_losses(model, tok, examples, batch_size: int, max_length: int) -> dict[str, Any]:
    """Token-mean CE on each example's answer tokens; loss = mean over kept examples."""
    from tselect.data.tokenize import batches, encode, length_sorted
    from tselect.scoring_fast import row_losses

    enc = encode(examples, tok, max_length)
    by_row: dict[int, dict[str, Any]] = {}
    for idx, ids, mask, labels in batches(enc.rows, batch_size, tok.pad_token_id, order=length_sorted(enc.rows)):
        mean_ce, n_tokens = row_losses(model, ids, mask, labels)  # head only at label positions
        for b, i in enumerate(idx):
            by_row[i] = {"id": examples[enc.kept[i]].id, "loss": float(mean_ce[b]), "n_tokens": int(n_tokens[b])}
    per = [by_row[i] for i in range(len(enc.rows))]  # back in input order
    loss = sum(r["loss"] for r in per) / len(per) if per else float("nan")
    return {"loss": loss, "n": len(per), "n_skipped": len(enc.skipped), "per_example": per}


def score_mc(model, tok, examples, cfg: EvaluateConfig, riders: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """Log-likelihood of every choice as the continuation of the prompt; acc and acc_norm.

    Each item's prompt is encoded once and shared by its choices (tselect.scoring_fast). `riders`:
    example id -> answer tokens packed as one more segment of that item; their token-mean losses
    come back under "riders" (see eval_loss_and_mc)."""
    from tselect.scoring_fast import choice_loglikes, pack_choices

    items, riders = [], riders or {}
    for ex in examples:
        prompt, sep = PROMPTS[cfg.prompt_format](tok, ex)
        conts = [list(tok(sep + choice, add_special_tokens=False)["input_ids"]) for choice in ex.meta["choices"]]
        extra = [riders[ex.id]] if ex.id in riders else []
        fits = [c for c in conts if len(prompt) + len(c) > cfg.max_length] == []
        items.append(pack_choices(tok, prompt, conts + (extra if fits else []), cfg.max_length,
                                  what=[*ex.meta["choices"], "answer"][: len(conts) + (len(extra) if fits else 0)]))
    lls = choice_loglikes(model, items, tok.pad_token_id, cfg.batch_size)
    n_choices = [len(ex.meta["choices"]) for ex in examples]
    ridden = {ex.id: {"loss": -ll[n] / len(riders[ex.id]), "n_tokens": len(riders[ex.id])}
              for ex, ll, n in zip(examples, lls, n_choices) if len(ll) > n}
    lls = [ll[:n] for ll, n in zip(lls, n_choices)]
    golds = [int(ex.meta["gold"]) for ex in examples]
    lengths = [[len(c) for c in ex.meta["choices"]] for ex in examples]  # chars, without the separator
    res = mc_accuracy(lls, golds, lengths)
    per = [{"id": ex.id, "loglikes": ll, "gold": g, "pred": p, "pred_norm": q}
           for ex, ll, g, p, q in zip(examples, lls, golds, res.pred, res.pred_norm)]
    n = len(examples)
    out = {"n": n, "acc": res.acc, "acc_se": binomial_se(res.acc, n), "acc_norm": res.acc_norm,
           "acc_norm_se": binomial_se(res.acc_norm, n), "per_example": per}
    return {**out, "riders": ridden} if riders else out


def eval_loss_and_mc(model, tok, rows, mc_rows, cfg: EvaluateConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(held-out loss of every row, MC scores of mc_rows) with each MC prompt encoded once: where a
    row's encoding is its MC prompt + its answer, the answer is one more segment of the packed item
    (tselect.scoring_fast.answer_segment) and its loss is read from there; other rows are scored
    alone. Same numbers as query_losses + score_mc."""
    from tselect.data.tokenize import encode
    from tselect.scoring_fast import answer_segment

    enc = encode(rows, tok, cfg.max_length)
    prompts = {ex.id: PROMPTS[cfg.prompt_format](tok, ex)[0] for ex in mc_rows}
    riders: dict[str, list[int]] = {}  # example id -> answer tokens riding in its MC pack
    for r, k in zip(enc.rows, enc.kept):
        ex = rows[k]
        if ex.id in prompts and ex.id not in riders:
            seg = answer_segment(r.input_ids, r.labels, prompts[ex.id])
            if seg is not None and len(prompts[ex.id]) + len(seg) <= cfg.max_length:
                riders[ex.id] = seg
    mc = score_mc(model, tok, mc_rows, cfg, riders) if mc_rows else {}
    rode = mc.pop("riders", {})  # riders whose item did not fit max_length whole are scored alone
    alone = [rows[k] for k in enc.kept if rows[k].id not in rode]
    alone_loss = {r["id"]: r for r in query_losses(model, tok, alone, cfg.batch_size, cfg.max_length)["per_example"]}
    per = [{"id": rows[k].id, **rode[rows[k].id]} if rows[k].id in rode else alone_loss[rows[k].id]
           for k in enc.kept]
    loss = sum(r["loss"] for r in per) / len(per) if per else float("nan")
    return {"loss": loss, "n": len(per), "n_skipped": len(enc.skipped), "per_example": per}, mc


def generate_scored(model, tok, examples, cfg: EvaluateConfig) -> dict[str, Any] | None:
    """Greedy answers (batched, left-padded; split across ranks under torchrun), scored by EM/F1.

    Rank 0 returns the scores; other ranks, told the job through `distributed.broadcast`, return None.
    """
    from tselect import distributed
    from tselect.evaluate.generate import generate_texts

    keep = cfg.max_length - cfg.max_new_tokens  # the prompt's tail, so prompt + answer fit
    job = {"prompts": [PROMPTS[cfg.prompt_format](tok, ex)[0][-keep:] for ex in examples],
           "max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size,
           "stop_at_newline": cfg.prompt_format == "plain"}
    distributed.broadcast({"generate": job})  # the other ranks generate their share (see _follow)
    texts = generate_texts(model, tok, **job)
    per = []
    for ex, text in zip(examples, texts):
        pred = text.split("\n")[0].strip() if cfg.prompt_format == "plain" else text.strip()
        golds = ex.meta["answers"] if isinstance(ex.meta["answers"], list) else [ex.meta["answers"]]
        gold_num = extract_number(golds[0])
        per.append({"id": ex.id, "pred": pred, "em": exact_match(pred, golds), "f1": token_f1(pred, golds),
                    "num_em": None if gold_num is None else float(extract_number(pred) == gold_num)})
    nums = [r["num_em"] for r in per if r["num_em"] is not None]
    em, num_em = _mean([r["em"] for r in per]), _mean(nums)
    return {"n": len(per), "em": em, "em_se": binomial_se(em, len(per)), "f1": _mean([r["f1"] for r in per]),
            "num_em": num_em, "num_em_se": binomial_se(num_em, len(nums)), "n_numeric": len(nums), "per_example": per}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


# --- what is evaluated -------------------------------------------------------------------------

def _check_trained_files(art: artifacts.Artifact) -> None:
    """Every file of the adapter/ (or model/) directory against the manifest checksums."""
    output = art.record.get("output", "adapter")
    rels = [rel for rel in art.manifest.get("files", {}) if rel.startswith(output + "/")]
    if not rels:
        raise UserError(f"artifact {art.id} lists no {output}/ files; remove it with `tselect rm {art.id}` "
                        "and rerun the finetune command that made it")
    for rel in rels:
        artifacts.checked_path(art, rel)


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


def _subject(cfg: EvaluateConfig, root: Path) -> tuple[dict[str, str], Any]:
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
    art = artifacts.resolve(root, cfg.finetune, stage="finetune")
    _check_trained_files(art)  # before any artifact directory exists
    if art.record.get("output", "adapter") == "adapter":
        _check_base(art)
    return {"finetune": art.id}, lambda: LOADERS[art.record.get("output", "adapter")](art)


def _external_adapter(cfg: EvaluateConfig) -> tuple[dict[str, str], Any]:
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


def eval_spec(cfg: EvaluateConfig) -> str | None:
    if cfg.eval_data is not None:
        return cfg.eval_data
    return f"{cfg.target}:eval" if cfg.target.startswith("builtin:") and cfg.target.count(":") == 1 else None


def _scorable(ex) -> bool:
    return ("choices" in ex.meta and "gold" in ex.meta) or "answers" in ex.meta


def _datasets(cfg: EvaluateConfig):
    from tselect.data import load_dataset
    from tselect.data.builtin import builtin_names

    spec = eval_spec(cfg)
    if spec is not None and cfg.eval_data is None and spec not in builtin_names():
        with_eval = ", ".join(n[: -len(":eval")] for n in builtin_names() if n.endswith(":eval"))
        raise UserError(f"--target {cfg.target} has no eval split; pass --eval-data FILE or use a target "
                        f"that has one ({with_eval})")
    query = load_dataset(cfg.target, cfg.fmt, split=cfg.split, columns=cfg.columns, flag="--target")
    evalset = load_dataset(spec, cfg.fmt, split=cfg.eval_split, columns=cfg.columns, flag="--eval-data") if spec else None
    if evalset is not None and not any(_scorable(ex) for ex in evalset.examples[: cfg.limit]):
        raise UserError(f"eval data {spec}: no row carries `choices` + `gold` (multiple choice) or `answers` "
                        "(generation), so nothing can be scored; add them to the rows or drop --eval-data")
    return query, evalset


def _shots(cfg: EvaluateConfig, query) -> tuple[list, list]:
    """(the few-shot examples, the query rows scored for the query loss: the first --limit of the rest)."""
    from tselect.evaluate.fewshot import draw_shots

    shots = draw_shots(list(query.examples), cfg.shots, cfg.shot_seed) if cfg.shots else []
    taken = {ex.id for ex in shots}
    return shots, [ex for ex in query.examples if ex.id not in taken][: cfg.limit]


def _add_shots(cfg: EvaluateConfig, rows: list, shots: list) -> list:
    from tselect.evaluate import fewshot

    if not shots:
        return rows
    if cfg.prompt_format == "plain":
        return [fewshot.with_shots_plain(ex, shots, PLAIN_CUE) for ex in rows]
    return [fewshot.with_shots_chat(ex, shots) for ex in rows]


def _measure(cfg: EvaluateConfig, model, tok, query, evalset) -> dict[str, Any]:
    rows = list(evalset.examples[: cfg.limit]) if evalset is not None else []
    shots, query_rows = _shots(cfg, query)
    mc_rows = _add_shots(cfg, [ex for ex in rows if "choices" in ex.meta and "gold" in ex.meta], shots)
    gen_rows = _add_shots(cfg, [ex for ex in rows if "answers" in ex.meta and not ("choices" in ex.meta and "gold" in ex.meta)], shots)
    out: dict[str, Any] = {
        "query": query_losses(model, tok, query_rows, cfg.batch_size, cfg.max_length),
        "eval": {"n": len(rows), "n_unscored": len(rows) - len(mc_rows) - len(gen_rows)},
    }
    if rows:  # the held-out loss (eval rows are never used for selection) and MC, sharing prompts
        out["eval"]["loss"], mc = eval_loss_and_mc(model, tok, rows, mc_rows, cfg)
        if mc_rows:
            out["eval"]["mc"] = mc
    if gen_rows:
        out["eval"]["generation"] = generate_scored(model, tok, gen_rows, cfg)
    if shots:
        out["shots"] = [ex.id for ex in shots]
    return out


def _measure_loss(cfg: EvaluateConfig, model, tok, query, evalset) -> dict[str, Any]:
    """Loss-only mode: the query loss and the held-out loss on every eval row, no task metrics."""
    rows = list(evalset.examples[: cfg.limit]) if evalset is not None else []
    out: dict[str, Any] = {
        "query": query_losses(model, tok, list(query.examples[: cfg.limit]), cfg.batch_size, cfg.max_length),
        "eval": {"n": len(rows), "n_unscored": len(rows)},
    }
    if rows:
        out["eval"]["loss"] = query_losses(model, tok, rows, cfg.batch_size, cfg.max_length)
    return out


MEASURES = {"all": _measure, "loss": _measure_loss}  # --metrics


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    ev = metrics["eval"]
    mc, gen = ev.get("mc", {}), ev.get("generation", {})
    return {"query_loss": metrics["query"]["loss"], "eval_loss": ev.get("loss", {}).get("loss"),
            "n_query": metrics["query"]["n"], "n_eval": ev["n"],
            "acc": mc.get("acc"), "acc_se": mc.get("acc_se"), "acc_norm": mc.get("acc_norm"),
            "acc_norm_se": mc.get("acc_norm_se"), "em": gen.get("em"), "em_se": gen.get("em_se"), "f1": gen.get("f1"),
            "num_em": gen.get("num_em"), "num_em_se": gen.get("num_em_se")}


def accuracy_text(record: dict[str, Any]) -> str:
    """': acc 0.620 ± 0.049 (n=100), ...' for the accuracies a record holds (± one standard error)."""
    parts = [f"{k} {record[k]:.3f} ± {record[f'{k}_se']:.3f}" for k in ("acc", "acc_norm", "em", "num_em")
             if record.get(k) is not None and record.get(f"{k}_se") is not None]
    return f": {', '.join(parts)} (n={record.get('n_eval')})" if parts else ""


def hashed_config(cfg: EvaluateConfig) -> dict[str, Any]:
    """The config part of the id. Measurements made before --metrics existed keep their ids ("all"
    is not hashed), and zero-shot ones made before --shots existed too (shots=0 is not hashed)."""
    return identity.hashed(cfg, also_excluded=(("metrics",) if cfg.metrics == "all" else ())
                           + (("shots", "shot_seed") if cfg.shots == 0 else ()))


def run(cfg: EvaluateConfig, root: Path) -> str:
    """The evaluate id. Under torchrun every rank calls this: rank 0 measures and writes the
    artifact, the others only generate their share of the EM/F1 rows (see generate_scored)."""
    from tselect import distributed

    distributed.init()
    if not distributed.is_main():
        return _follow(cfg, root)
    before = distributed.sent()
    try:
        aid = _produce(cfg, root)
    except Exception as e:
        if distributed.world_size() > 1 and distributed.sent() == before:  # the others still wait
            distributed.broadcast({"error": str(e) if isinstance(e, UserError) else f"rank 0 failed: {e}"})
        raise
    distributed.broadcast({"done": aid})
    return aid


def _follow(cfg: EvaluateConfig, root: Path) -> str:
    """A rank other than 0: generate when rank 0 asks, until it sends the id (or its error)."""
    from tselect import distributed
    from tselect.evaluate.generate import generate_texts

    model = tok = None
    while True:
        msg = distributed.broadcast()
        if "done" in msg:
            return msg["done"]
        if "error" in msg:
            raise UserError(msg["error"])
        if model is None:
            model, tok = _subject(cfg, root)[1]()  # reads the finetune's files; never writes the store
        generate_texts(model, tok, **msg["generate"])


def _produce(cfg: EvaluateConfig, root: Path) -> str:
    query, evalset = _datasets(cfg)
    subject, load = _subject(cfg, root)
    inputs = {**subject, "query": query.content_hash}
    if evalset is not None:
        inputs["eval"] = evalset.content_hash
    hashed = hashed_config(cfg)

    def write(build: artifacts.Build) -> None:
        model, tok = load()
        start = time.perf_counter()
        metrics = MEASURES[cfg.metrics](cfg, model, tok, query, evalset)
        facts = {"target": cfg.target, "eval_data": eval_spec(cfg), "finetune": cfg.finetune,
                 "model": cfg.model, "adapter": cfg.adapter, "prompt_format": cfg.prompt_format, "limit": cfg.limit,
                 "metrics_mode": cfg.metrics, "shots": cfg.shots}
        store.write_json(build.path / "metrics.json", {**facts, **metrics})
        build.record(**facts, **_summary(metrics), seconds=round(time.perf_counter() - start, 3),
                     device=str(next(model.parameters()).device))

    aid = artifacts.produce(root, "evaluate", hashed, inputs, write)
    progress.note(f"evaluate {cfg.finetune or cfg.model or 'builtin:smollm2'} on {cfg.target} → {aid}"
                  + accuracy_text(artifacts.resolve(root, aid).record))
    return aid
