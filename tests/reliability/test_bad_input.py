"""Bad input, every command: exactly one stderr line naming the input and the fix, exit code 2,
and no artifact directory at all: neither a finished `<stage>/<id>` nor an unfinished `.part`.

The table `CASES` is shared with `python -m reliability.run`. Each case is (name, argv template,
substrings the error line must contain). Templates use {F} {S} {S2} {FT} (artifact ids of the
prepared store), {P} {Q} {PV} {QV} (valid pool/query files and vectors), {M} (the tiny model dir)
and {D} (a directory holding the deliberately bad files made by `make_bad_files`).
`LEAVES_PART` would list cases allowed to leave a `.part`; it is empty.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.reliability import helpers as H

VEC = ["--rep", "vectors", "--pool-vectors", "{PV}", "--query-vectors", "{QV}"]
FEAT = ["featurize", "--query", "{Q}", *VEC]  # + --pool ...

CASES: list[tuple[str, list[str], list[str]]] = [
    # --- data files -------------------------------------------------------------------------
    ("jsonl-bad-json", [*FEAT, "--pool", "{D}/bad_json.jsonl"], ["bad_json.jsonl:2", "bad JSON"]),
    ("jsonl-not-an-object", [*FEAT, "--pool", "{D}/array_row.jsonl"], ["array_row.jsonl:1", "JSON object"]),
    ("jsonl-unknown-shape", [*FEAT, "--pool", "{D}/unknown_keys.jsonl"], ["unknown_keys.jsonl:1", "--format"]),
    ("jsonl-no-assistant", [*FEAT, "--pool", "{D}/no_assistant.jsonl"], ["no_assistant.jsonl:1", "assistant"]),
    ("jsonl-non-string-field", [*FEAT, "--pool", "{D}/int_prompt.jsonl"], ["int_prompt.jsonl:1", "`prompt`"]),
    ("jsonl-bad-role", [*FEAT, "--pool", "{D}/bad_role.jsonl"], ["bad_role.jsonl:1", "role"]),
    ("empty-pool", [*FEAT, "--pool", "{D}/empty.jsonl"], ["empty.jsonl", "no examples"]),
    ("blank-lines-only-pool", [*FEAT, "--pool", "{D}/blank.jsonl"], ["blank.jsonl", "no examples"]),
    ("empty-query", ["featurize", *VEC, "--pool", "{P}", "--query", "{D}/empty.jsonl"], ["empty.jsonl", "no examples"]),
    ("duplicate-ids", [*FEAT, "--pool", "{D}/dupes.jsonl"], ["dupes.jsonl", "duplicates row 1"]),
    ("non-utf8-text", [*FEAT, "--pool", "{D}/latin1.jsonl"], ["latin1.jsonl:2", "UTF-8"]),
    ("missing-data-file", [*FEAT, "--pool", "{D}/nope.jsonl"], ["nope.jsonl", "does not exist"]),
    ("dir-without-arrow", [*FEAT, "--pool", "{D}/emptydir"], ["emptydir", ".arrow"]),
    ("bad-format", [*FEAT, "--pool", "{P}", "--format", "xml"], ["--format 'xml'", "chat"]),
    ("format-mismatch", [*FEAT, "--pool", "{P}", "--format", "alpaca"], ["`instruction`"]),
    ("unknown-builtin", [*FEAT, "--pool", "builtin:nope"], ["builtin:nope", "valid names"]),
    # --- vectors ------------------------------------------------------------------------------
    ("non-finite-vectors", ["featurize", "--rep", "vectors", "--pool", "{P}", "--query", "{Q}", "--pool-vectors", "{PV}",
                            "--query-vectors", "{D}/nan.npy"], ["nan.npy", "non-finite"]),
    ("vector-dim-mismatch", ["featurize", "--rep", "vectors", "--pool", "{P}", "--query", "{Q}", "--pool-vectors", "{PV}",
                             "--query-vectors", "{D}/q_dim5.npy"], ["width", "same dim"]),
    ("vector-row-mismatch", ["featurize", "--rep", "vectors", "--pool", "{P}", "--query", "{Q}", "--pool-vectors",
                             "{D}/p_rows10.npy", "--query-vectors", "{QV}"], ["p_rows10.npy", "10 rows"]),
    ("vectors-not-npy", ["featurize", "--rep", "vectors", "--pool", "{P}", "--query", "{Q}", "--pool-vectors",
                         "{D}/not.npy", "--query-vectors", "{QV}"], ["not.npy", "numpy.save"]),
    ("vectors-1d", ["featurize", "--rep", "vectors", "--pool", "{P}", "--query", "{Q}", "--pool-vectors",
                    "{D}/flat.npy", "--query-vectors", "{QV}"], ["flat.npy", "2-D"]),
    ("vectors-missing-flag", ["featurize", "--rep", "vectors", "--pool", "{P}", "--query", "{Q}"], ["--pool-vectors"]),
    # --- featurize options --------------------------------------------------------------------
    ("unknown-representation", ["featurize", "--rep", "nope", "--pool", "{P}", "--query", "{Q}"], ["'nope'", "embed"]),
    ("param-on-vectors", [*FEAT, "--pool", "{P}", "--param", "dim=4"], ["takes no --param", "dim"]),
    ("unknown-less-param", ["featurize", "--rep", "less", "--pool", "{P}", "--query", "{Q}", "--model", "{M}",
                            "--param", "dimm=4"], ["dimm", "dim"]),
    ("less-param-not-int", ["featurize", "--rep", "less", "--pool", "{P}", "--query", "{Q}", "--model", "{M}",
                            "--param", "dim=big"], ["dim=big", "integer"]),
    ("bad-dtype", [*FEAT, "--pool", "{P}", "--dtype", "float64"], ["--dtype", "float16"]),
    ("max-length-too-small", [*FEAT, "--pool", "{P}", "--max-length", "4"], ["--max-length", ">= 8"]),
    ("batch-size-zero", [*FEAT, "--pool", "{P}", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    # --- models -------------------------------------------------------------------------------
    ("model-missing", ["featurize", "--rep", "rds", "--pool", "{P}", "--query", "{Q}", "--model", "{D}/no_model"],
     ["no_model", "--model"]),
    ("model-is-a-file", ["featurize", "--rep", "rds", "--pool", "{P}", "--query", "{Q}", "--model", "{D}/empty.jsonl"],
     ["is a file", "directory"]),
    ("model-without-config", ["featurize", "--rep", "rds", "--pool", "{P}", "--query", "{Q}", "--model", "{D}/emptydir"],
     ["config.json"]),
    ("model-not-causal-lm", ["featurize", "--rep", "rds", "--pool", "{P}", "--query", "{Q}", "--model", "{D}/bert"],
     ["not a causal LM", "BertModel"]),
    ("model-broken-weights", ["featurize", "--rep", "rds", "--pool", "{P}", "--query", "{Q}", "--model",
                              "{D}/no_weights"], ["cannot load a causal LM", "no_weights"]),
    ("unknown-builtin-model", ["featurize", "--rep", "rds", "--pool", "{P}", "--query", "{Q}", "--model",
                               "builtin:gpt9"], ["builtin:gpt9", "builtin:smollm2"]),
    # --- select -------------------------------------------------------------------------------
    ("budget-above-pool", ["select", "--features", "{F}", "--budget", "65"], ["--budget 65", "1..64"]),
    ("negative-budget", ["select", "--features", "{F}", "--budget", "-1"], ["--budget -1", "1..64"]),
    ("zero-budget", ["select", "--features", "{F}", "--budget", "0"], ["--budget 0"]),
    ("unknown-selector", ["select", "--features", "{F}", "--selector", "best"], ["'best'", "round_robin"]),
    ("unknown-selector-param", ["select", "--features", "{F}", "--selector", "uot", "--param", "foo=1"],
     ["'foo'", "eps"]),
    ("param-without-value", ["select", "--features", "{F}", "--selector", "uot", "--param", "eps"], ["NAME=VALUE"]),
    ("param-not-a-number", ["select", "--features", "{F}", "--selector", "uot", "--param", "eps=abc"],
     ["eps", "abc"]),
    ("uot-eps-zero", ["select", "--features", "{F}", "--selector", "uot", "--param", "eps=0"], ["eps", "> 0"]),
    ("uot-eps-negative", ["select", "--features", "{F}", "--selector", "uot", "--param", "eps=-0.5"], ["eps", "> 0"]),
    ("score-selector-without-scores", ["select", "--features", "{F}", "--selector", "score"], ["--scores"]),
    ("features-id-unknown", ["select", "--features", "featurize-0000"], ["featurize-0000", "tselect ls"]),
    ("features-id-of-wrong-stage", ["select", "--features", "{S}"], ["select artifact", "featurize"]),
    ("ambiguous-prefix", ["select", "--features", "featurize-"], ["ambiguous"]),
    ("exclude-selection-from-another-pool", ["select", "--features", "{F}", "--selector", "strict_random",
                                             "--budget", "10", "--exclude", "{S2}"], ["{S2}", "pool"]),
    ("budget-not-an-integer", ["select", "--features", "{F}", "--budget", "ten"], ["--budget", "integer"]),
    ("unknown-option", ["select", "--features", "{F}", "--budgett", "3"], ["--budgett"]),
    # --- export / mix / store commands --------------------------------------------------------
    ("export-wrong-stage", ["export", "{F}", "--out", "{D}/x.jsonl"], ["featurize artifact", "select"]),
    ("export-budget-zero", ["export", "{S}", "--out", "{D}/x.jsonl", "--budget", "0"], ["--budget 0", "1..64"]),
    ("export-into-missing-dir", ["export", "{S}", "--out", "{D}/no/such/dir/x.jsonl"], ["no/such/dir", "--out"]),
    ("mix-selections-of-different-pools", ["mix", "{S}", "{S2}"], ["{S2}", "pool"]),
    ("verify-unknown-id", ["verify", "select-0000"], ["select-0000"]),
    ("rm-unknown-id", ["rm", "nothing-here"], ["nothing-here"]),
    ("unwritable-store", [*FEAT, "--pool", "{P}", "--store", "{D}/empty.jsonl/store"], ["not writable", "--store"]),
    # --- finetune -----------------------------------------------------------------------------
    ("finetune-budget-above-selection", ["finetune", "--selection", "{S}", "--budget", "65", "--model", "{M}"],
     ["--budget 65", "1..64"]),
    ("finetune-negative-budget", ["finetune", "--selection", "{S}", "--budget", "-3", "--model", "{M}"],
     ["--budget", ">= 1"]),
    ("finetune-full-without-pool", ["finetune", "--selection", "full", "--model", "{M}"], ["--pool"]),
    ("finetune-unknown-method", ["finetune", "--selection", "{S}", "--method", "qlora", "--model", "{M}"],
     ["qlora", "lora"]),
    ("finetune-accumulation-mismatch", ["finetune", "--selection", "{S}", "--batch-size", "3",
                                        "--effective-batch-size", "8", "--model", "{M}"], ["multiple", "batch_size=3"]),
    ("finetune-selection-of-wrong-stage", ["finetune", "--selection", "{F}", "--model", "{M}"], ["featurize artifact"]),
    ("zero-length-responses-after-truncation", ["finetune", "--selection", "{S}", "--budget", "4", "--max-length",
                                                "8", "--model", "{M}"], ["--max-length", "response"]),
    # --- evaluate -----------------------------------------------------------------------------
    ("evaluate-finetune-and-model", ["evaluate", "--target", "{Q}", "--finetune", "{FT}", "--model", "{M}"],
     ["drop --model"]),
    ("adapter-for-another-model", ["evaluate", "--target", "{Q}", "--finetune", "{FT_MOVED}"],
     ["changed since", "fine-tune again"]),
    ("target-without-eval-split", ["evaluate", "--target", "builtin:pool", "--model", "{M}"],
     ["builtin:pool", "eval"]),
    ("eval-split-without-scorable-rows", ["evaluate", "--target", "{Q}", "--eval-data", "{P}", "--model", "{M}"],
     ["choices", "answers"]),
    ("evaluate-limit-zero", ["evaluate", "--target", "{Q}", "--model", "{M}", "--limit", "0"], ["--limit"]),
    ("evaluate-bad-prompt-format", ["evaluate", "--target", "{Q}", "--model", "{M}", "--prompt-format", "xml"],
     ["--prompt-format", "chat"]),
    # --- other commands -----------------------------------------------------------------------
    ("warmup-unknown-preset", ["warmup", "--pool", "{P}", "--model", "{M}", "--preset", "gpu"], ["--preset", "cpu"]),
    ("score-unknown-strategy", ["score", "--strategy", "vibes", "--pool", "{P}", "--model", "{M}"], ["vibes", "length"]),
    ("score-miwv-without-features", ["score", "--strategy", "miwv", "--pool", "{P}", "--model", "{M}"], ["--features"]),
    # --- issue 13: inputs that used to give a traceback or a silent wrong result ----------------
    ("jsonl-5000-digit-integer", [*FEAT, "--pool", "{D}/bigint.jsonl"], ["bigint.jsonl:1", "digits"]),
    ("jsonl-5000-digit-integer-query", ["featurize", *VEC, "--pool", "{P}", "--query", "{D}/bigint.jsonl"],
     ["bigint.jsonl:1"]),
    ("arrow-corrupt-bytes", [*FEAT, "--pool", "{D}/arrow_garbage"], ["arrow_garbage", "Arrow"]),
    ("arrow-truncated-header", [*FEAT, "--pool", "{D}/arrow_short"], ["arrow_short", "Arrow"]),
    ("param-int-1e999", ["select", "--features", "{F}", "--selector", "uot", "--param", "num_iter=1e999"],
     ["num_iter"]),
    ("param-int-inf", ["select", "--features", "{F}", "--selector", "knn_uniform", "--param", "max_k=inf"], ["max_k"]),
    ("param-max-k-1e999", ["select", "--features", "{F}", "--selector", "knn_kde", "--param", "max_k=1e999"],
     ["max_k"]),
    ("param-int-5000-digits", ["select", "--features", "{F}", "--selector", "uot", "--param", "num_iter=" + "9" * 5000],
     ["num_iter"]),
    ("param-int-huge", ["select", "--features", "{F}", "--selector", "knn_uniform", "--param",
                        "max_k=99999999999999999999999"], ["max_k"]),
    ("param-float-nan", ["select", "--features", "{F}", "--selector", "uot", "--param", "eps=nan"], ["eps"]),
    ("param-float-inf", ["select", "--features", "{F}", "--selector", "uot", "--param", "eps=inf"], ["eps"]),
    ("param-float-1e999", ["select", "--features", "{F}", "--selector", "knn_kde", "--param", "sigma=1e999"],
     ["sigma"]),
    ("param-tuple-inf", ["select", "--features", "{F}", "--selector", "uot", "--param", "eps=-1e999"], ["eps"]),
    ("less-param-1e999", ["featurize", "--rep", "less", "--pool", "{P}", "--query", "{Q}", "--model", "{M}",
                          "--param", "dim=1e999"], ["dim"]),
    ("finetune-lr-inf", ["finetune", "--selection", "{S}", "--budget", "4", "--lr", "inf", "--model", "{M}"], ["lr"]),
    ("finetune-lr-nan", ["finetune", "--selection", "{S}", "--budget", "4", "--lr", "nan", "--model", "{M}"], ["lr"]),
    ("finetune-seed-huge", ["finetune", "--selection", "{S}", "--budget", "4", "--seed", "99999999999999999999",
                            "--model", "{M}"], ["seed"]),
    ("finetune-dropout-inf", ["finetune", "--selection", "{S}", "--budget", "4", "--lora-dropout", "inf",
                              "--model", "{M}"], ["dropout"]),
    ("finetune-warmup-nan", ["finetune", "--selection", "{S}", "--budget", "4", "--warmup-ratio", "nan",
                             "--model", "{M}"], ["warmup"]),
    ("finetune-grad-norm-inf", ["finetune", "--selection", "{S}", "--budget", "4", "--max-grad-norm", "inf",
                                "--model", "{M}"], ["max_grad_norm"]),
    ("finetune-effective-batch-zero", ["finetune", "--selection", "{S}", "--budget", "4", "--effective-batch-size",
                                       "0", "--model", "{M}"], ["effective_batch_size"]),
    ("vectors-width-0", ["featurize", "--rep", "vectors", "--pool", "{P}", "--query", "{Q}", "--pool-vectors",
                         "{D}/p_w0.npy", "--query-vectors", "{QV}"], ["p_w0.npy", "dim >= 1"]),
    ("vectors-complex", ["featurize", "--rep", "vectors", "--pool", "{P}", "--query", "{Q}", "--pool-vectors",
                         "{D}/p_complex.npy", "--query-vectors", "{QV}"], ["p_complex.npy", "complex"]),
    ("vectors-zero-row", ["featurize", "--rep", "vectors", "--pool", "{P}", "--query", "{Q}", "--pool-vectors",
                          "{PV}", "--query-vectors", "{D}/q_zero_row.npy"], ["q_zero_row.npy", "zero"]),
    ("vectors-inf-in-float64", ["featurize", "--rep", "vectors", "--pool", "{P}", "--query", "{Q}", "--pool-vectors",
                                "{PV}", "--query-vectors", "{D}/q_inf64.npy"], ["q_inf64.npy", "non-finite"]),
    *[(f"experiment-toml-{name}", ["run", "--dry-run", f"{{D}}/exp_{name}.toml"], [f"exp_{name}.toml"])
      for name in ("experiment-not-table", "finetune-not-table", "bins-inf", "seeds-strings", "lr-string",
                   "eval-data-not-table", "select-not-table", "random-seeds-string", "big-int", "not-utf8",
                   "epochs-float", "budgets-inf")],
    ("experiment-toml-lr-inf", ["run", "--dry-run", "{D}/exp_lr-inf.toml"], ["lr"]),
    ("experiment-toml-select-param-inf", ["run", "--dry-run", "{D}/exp_select-param-inf.toml"], ["eps"]),
]

# Malformed experiment files: smoke.toml with one change each (the name says which).
_SMOKE = """[experiment]
pool = "builtin:pool-small"
targets = ["sciq"]
representations = ["embed"]
selectors = ["round_robin"]
budgets = [8]
seeds = [0]
[finetune]
epochs = 1
"""
BAD_TOML = {
    "experiment-not-table": "experiment = 3\n",
    "finetune-not-table": _SMOKE.replace("[finetune]\nepochs = 1", "finetune = [1, 2]"),
    "bins-inf": _SMOKE + "[quantile]\nbins = inf\n",
    "seeds-strings": _SMOKE.replace("seeds = [0]", 'seeds = ["a"]'),
    "lr-string": _SMOKE + 'lr = "fast"\n',
    "lr-inf": _SMOKE + "lr = inf\n",
    "eval-data-not-table": _SMOKE + "[evaluate]\neval_data = 3\n",
    "select-not-table": _SMOKE + "[select]\nuot = 3\n",
    "select-param-inf": _SMOKE + "[select.uot]\neps = inf\n",
    "random-seeds-string": _SMOKE.replace("seeds = [0]", 'seeds = [0]\nrandom_seeds = "x"'),
    "big-int": _SMOKE.replace("budgets = [8]", "budgets = [" + "9" * 5000 + "]"),
    "epochs-float": _SMOKE.replace("epochs = 1", "epochs = 1.5"),
    "budgets-inf": _SMOKE.replace("budgets = [8]", "budgets = [inf]"),
}

# Cases that may leave `<stage>/<id>.part` behind: none. A writer that finds bad input
# (vectors validated, a model that fails to load) removes the .part it made (artifacts.produce).
LEAVES_PART: set[str] = set()

# Cases that break the contract today because of defects in files this suite may not change
# (empty now: `select --exclude` of another pool and click usage errors were fixed meanwhile).
XFAIL: dict[str, str] = {}


def make_bad_files(d: Path, tiny_model_dir: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    (d / "bad_json.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    (d / "array_row.jsonl").write_text("[1, 2]\n")
    (d / "unknown_keys.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    (d / "no_assistant.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    (d / "int_prompt.jsonl").write_text('{"prompt": 3, "completion": "x"}\n')
    (d / "bad_role.jsonl").write_text(json.dumps({"messages": [{"role": "robot", "content": "x"},
                                                               {"role": "assistant", "content": "y"}]}) + "\n")
    (d / "empty.jsonl").write_text("")
    (d / "blank.jsonl").write_text("\n   \n\n")
    (d / "dupes.jsonl").write_text((json.dumps(good) + "\n") * 2)
    (d / "latin1.jsonl").write_bytes((json.dumps(good) + "\n").encode() + '{"prompt": "café", "completion": "x"}\n'.encode("latin-1"))
    (d / "emptydir").mkdir(exist_ok=True)
    np.save(d / "nan.npy", np.full((4, 8), np.nan, dtype=np.float32))
    np.save(d / "q_dim5.npy", np.ones((4, 5), dtype=np.float32))
    np.save(d / "p_rows10.npy", np.ones((10, 8), dtype=np.float32))
    (d / "not.npy").write_bytes(b"definitely not numpy")
    np.save(d / "flat.npy", np.ones(64, dtype=np.float32))
    (d / "bert").mkdir(exist_ok=True)
    (d / "bert" / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    (d / "bigint.jsonl").write_text('{"prompt": "a", "completion": "b", "n": ' + "9" * 5000 + "}\n")
    for name, data in (("arrow_garbage", bytes(range(256)) * 8), ("arrow_short", b"ARROW1\x00\x00junk")):
        (d / name).mkdir(exist_ok=True)
        (d / name / "data-00000-of-00001.arrow").write_bytes(data)
    np.save(d / "p_w0.npy", np.zeros((64, 0), dtype=np.float32))
    np.save(d / "p_complex.npy", np.ones((64, 8), dtype=np.complex64))
    q = np.ones((4, 8))
    q[2] = 0
    np.save(d / "q_zero_row.npy", q)
    np.save(d / "q_inf64.npy", np.full((4, 8), 1e308) * 10)  # inf in float64 already
    for name, text in BAD_TOML.items():
        (d / f"exp_{name}.toml").write_bytes(text.encode() if name != "not-utf8" else b"")
    (d / "exp_not-utf8.toml").write_bytes(b"[experiment]\nname = \"caf\xe9\"\n")
    (d / "no_weights").mkdir(exist_ok=True)
    (d / "no_weights" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"],
                                                              "model_type": "llama"}))


def prepare(base: Path, small_chain: dict, tiny_model_dir: Path) -> dict:
    """A store with two feature sets over different pools, their selections and a finetune."""
    st = base / "store"
    shutil.copytree(small_chain["ref"], st)
    d = base / "bad"
    make_bad_files(d, tiny_model_dir)
    inp = small_chain["inputs"]
    other = H.make_vectors_inputs(base / "other", 30, seed=5)
    other["pool"].write_text("".join(json.dumps(r) + "\n" for r in H.pool_rows(30, tag="other-")))
    f2 = H.last_line(H.tselect(*H.vectors_args(other), store=st))
    s2 = H.last_line(H.tselect("select", "--features", f2, "--selector", "random", store=st))
    # A finetune whose recorded base model no longer is the model it was trained from.
    moved = _finetune_with_moved_base(st, small_chain, base) if small_chain.get("finetune") else "finetune-none"
    return {"store": st, "F": small_chain["features"], "S": small_chain["selection"], "S2": s2,
            "FT": small_chain["finetune"], "FT_MOVED": moved, "P": inp["pool"], "Q": inp["query"],
            "PV": inp["pool_vectors"], "QV": inp["query_vectors"], "M": tiny_model_dir, "D": d}


def _finetune_with_moved_base(st: Path, small_chain: dict, base: Path) -> str:
    """Copy the finetune artifact under a new id whose record points at a model dir that now holds
    another model (as if the base model directory had been overwritten after training)."""
    from tests.tiny_model import build_tiny_model

    other_model = build_tiny_model(base / "other_model", seed=1)
    from tselect.artifacts import compute_id

    src = H.artifact_dir(st, small_chain["finetune"])
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["config"]["copy_of"] = small_chain["finetune"]  # a valid id of its own (reads check ids)
    new_id = compute_id("finetune", manifest["config"], manifest["inputs"])
    dst = src.parent / new_id
    shutil.copytree(src, dst)
    manifest["id"] = new_id
    manifest["record"]["model"] = str(other_model)
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return new_id


def fill(template: list[str], ctx: dict) -> list[str]:
    out = []
    for a in template:
        for k, v in ctx.items():
            if k != "store":
                a = a.replace("{" + k + "}", str(v))
        out.append(a)
    return out


def run_case(case: tuple, ctx: dict, work: Path) -> dict:
    """Run one case against a private copy of ctx['store']; the outcome says whether it met the contract."""
    name, template, expect = case
    store = work / name
    shutil.copytree(ctx["store"], store)
    args = fill(template, {**ctx, "store": store})
    before_final, before_part = set(H.final_dirs(store)), set(H.part_dirs(store))
    proc = H.tselect(*args, store=store, check=False, timeout=300)
    lines = proc.stderr.strip().splitlines()
    new_final = sorted(p.relative_to(store).as_posix() for p in set(H.final_dirs(store)) - before_final)
    new_part = sorted(p.relative_to(store).as_posix() for p in set(H.part_dirs(store)) - before_part)
    missing = [e for e in fill(expect, ctx) if not (lines and e in lines[0])]
    out = {"case": name, "exit": proc.returncode, "stderr": proc.stderr.strip()[-2000:], "new_artifacts": new_final,
           "new_parts": new_part, "missing": missing}
    out["ok"] = (proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and not missing
                 and not new_final and (not new_part or name in LEAVES_PART))
    shutil.rmtree(store, ignore_errors=True)
    return out


def run_all(ctx: dict, work: Path, workers: int = 2) -> dict[str, dict]:
    work.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:  # CLI start-up dominates; every case has its own store
        return {o["case"]: o for o in pool.map(lambda c: run_case(c, ctx, work), CASES)}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, small_chain, tiny_model_dir) -> dict:
    return prepare(tmp_path_factory.mktemp("badinput"), small_chain, tiny_model_dir)


@pytest.fixture(scope="module")
def outcomes(ctx, tmp_path_factory) -> dict:
    return run_all(ctx, tmp_path_factory.mktemp("cases"))


def test_table_is_broad():
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name", [pytest.param(c[0], marks=pytest.mark.xfail(reason=XFAIL[c[0]], strict=False))
                                  if c[0] in XFAIL else c[0] for c in CASES])
def test_bad_input_gives_one_line_exit_2_and_no_artifact(outcomes, name):
    o = outcomes[name]
    assert o["exit"] == 2, o
    lines = o["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), o
    assert not o["missing"], o
    assert not o["new_artifacts"], o
    assert not o["new_parts"] or name in LEAVES_PART, o
