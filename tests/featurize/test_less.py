"""LESS features end to end on the tiny model: stored rows equal a bs=1 recomputation."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tselect import artifacts, store
from tselect.data import load_dataset
from tselect.errors import UserError
from tselect.featurize import less
from tselect.featurize.adam import adam_direction
from tselect.featurize.grads import per_example_grads
from tselect.featurize.project import make_projector
from tselect.warmup import load_checkpoint, read_checkpoints

DIM = 256


@dataclass(frozen=True)
class Cfg:  # the FeaturizeConfig fields less reads, plus the proposed `params`
    model: str
    max_length: int = 64
    batch_size: int = 5
    dtype: str = "float32"
    params: tuple = (("dim", str(DIM)), ("projection", "rademacher"), ("proj_seed", "3"))


def featurize(root, cfg, pool, query) -> str:
    from tselect.featurize import REPRESENTATIONS, _prerequisites, write_checkpoint

    def write(build):  # what the featurize stage does, for a config that is not a FeaturizeConfig
        group = build.path / store.FEATURES
        store.open_group(group)
        nested = _prerequisites(root, REPRESENTATIONS["less"], cfg, pool)  # the warmup and a pool donor
        donor = nested.pop("donor", None)
        attrs, checkpoints = less.rows(cfg, pool, query, **nested)
        for ck in checkpoints:
            write_checkpoint(group, ck, (len(query), len(pool)), cfg.dtype, f"less {ck.name}", donor)
        store.set_attrs(group, attrs)

    inputs = {"pool": pool.content_hash, "query": query.content_hash, **less.identity(cfg)}
    return artifacts.produce(root, "featurize", {"rep": "less"}, inputs, write, resume=True)


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    from tests.conftest import toy_rows

    d = tmp_path_factory.mktemp("less")
    (d / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy_rows()))
    (d / "query.jsonl").write_text(json.dumps({"prompt": "Which gas do trees take in?", "completion": "CO2."}) + "\n"
                                   + json.dumps({"prompt": "Boiling point of water?", "completion": "100 C."}) + "\n")
    pool, query = load_dataset(str(d / "pool.jsonl")), load_dataset(str(d / "query.jsonl"))
    cfg = Cfg(model=str(tiny_model_dir))
    root = d / "store"
    fid = featurize(root, cfg, pool, query)
    return root, fid, cfg, pool, query


def test_layout_weights_and_unit_rows(run):
    root, fid, cfg, pool, query = run
    feats = store.open_features(artifacts.final_dir(root, fid))
    warm = read_checkpoints(root / "warmup" / feats.attrs["warmup"])
    assert feats.checkpoints == [c["name"] for c in warm] and len(warm) == 4  # cpu preset: 4 epochs
    lrs = np.array([c["mean_lr"] for c in warm])
    assert feats.weights == pytest.approx((lrs / lrs.sum()).tolist())
    assert feats.weights[0] > feats.weights[-1]  # linear decay: later epochs weigh less
    for p, q in zip(feats.pools, feats.queries):
        assert p.shape == (len(pool), DIM) and q.shape == (len(query), DIM)
        assert np.allclose(np.linalg.norm(np.asarray(p[:]), axis=1), 1, atol=1e-5)
        assert np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)


def test_rows_equal_bs1_adam_and_sgd_recomputation(run, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tselect.data.tokenize import encode_example

    root, fid, cfg, pool, query = run
    feats = store.open_features(artifacts.final_dir(root, fid))
    t = 1
    ckpt = root / "warmup" / feats.attrs["warmup"] / feats.checkpoints[t]
    model, m, v, _ = load_checkpoint(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), ckpt)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    proj = make_projector("rademacher", DIM, seed=3)

    def feature(example, adam: bool) -> np.ndarray:
        row = encode_example(example, tok, cfg.max_length)
        ids, labels = torch.tensor([row.input_ids]), torch.tensor([row.labels])
        grads = per_example_grads(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
        x = sum(proj.project(n, adam_direction(g, m[n], v[n]) if adam else g) for n, g in grads.items())[0].numpy()
        return x / np.linalg.norm(x)

    for i in (0, 7, 23):
        got, want = feats.pools[t][i], feature(pool.examples[i], adam=True)
        assert np.allclose(got, want, atol=1e-4), (i, np.abs(got - want).max(), got[:4], want[:4])
    assert np.allclose(feats.queries[t][1], feature(query.examples[1], adam=False), atol=1e-4)
    # Adam preconditioning really changes the pool features.
    assert not np.allclose(feats.pools[t][0], feature(pool.examples[0], adam=False), atol=1e-2)


def test_warmup_is_shared_across_query_sets(run):
    root, fid, cfg, pool, query = run
    other = featurize(root, cfg, pool, load_dataset(str(root.parent / "pool.jsonl")))
    assert other != fid
    assert len([d for d in (root / "warmup").iterdir() if d.is_dir()]) == 1


def test_second_query_set_copies_pool_rows_byte_identically(run, tmp_path, monkeypatch):
    root, fid, cfg, pool, query = run
    rows = [{"prompt": "Name a noble gas.", "completion": "Neon."}]
    (tmp_path / "q2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    other_query = load_dataset(str(tmp_path / "q2.jsonl"))
    computed = []
    real = less.gradient_rows
    monkeypatch.setattr(less, "gradient_rows", lambda m, r, *a, **k: computed.append(len(r)) or real(m, r, *a, **k))
    shared = featurize(root, cfg, pool, other_query)
    assert sum(computed) == 4 * len(other_query)  # only the query rows, one per checkpoint
    fresh = featurize(tmp_path / "fresh", cfg, pool, other_query)  # the same features computed from scratch
    assert fresh == shared
    a = store.open_features(artifacts.final_dir(root, shared))
    b = store.open_features(artifacts.final_dir(tmp_path / "fresh", fresh))
    base = store.open_features(artifacts.final_dir(root, fid))
    for pa, pb, p0, qa, qb in zip(a.pools, b.pools, base.pools, a.queries, b.queries):
        assert np.asarray(pa[:]).tobytes() == np.asarray(pb[:]).tobytes() == np.asarray(p0[:]).tobytes()
        assert qa.tobytes() == qb.tobytes()


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(UserError, match="projection, dim, proj_seed, adam, warmup"):
        less.less_config(Cfg(model="x", params=(("dims", "8"),)))
    with pytest.raises(UserError, match="sjlt, rademacher"):
        less.less_config(Cfg(model="x", params=(("projection", "gauss"),)))


def test_bf16_end_to_end_matches_fp32(run, tmp_path, monkeypatch):
    # The GPU path on CPU: base AND LoRA in bf16 (no fp32 adapter copies), fp32 only inside the
    # per-example gradient, Adam and projection math. Stored rows must agree with the fp32 run.
    import shutil

    from tselect import models

    root, fid, cfg, pool, query = run
    shutil.copytree(root / "warmup", tmp_path / "store" / "warmup")  # the same warmup checkpoints
    real = models.load_model
    dtypes = []

    def bf16(ref, dtype=None, device=None):
        model, tok = real(ref, dtype=torch.bfloat16, device=device)
        dtypes.append(next(model.parameters()).dtype)
        return model, tok

    monkeypatch.setattr(models, "load_model", bf16)
    other = featurize(tmp_path / "store", cfg, pool, query)
    assert dtypes == [torch.bfloat16], "one bf16 base model for every checkpoint"
    a = store.open_features(artifacts.final_dir(root, fid))
    b = store.open_features(artifacts.final_dir(tmp_path / "store", other))
    worst = 1.0
    for pa, pb, qa, qb in zip(a.pools, b.pools, a.queries, b.queries):
        for x, y in ((np.asarray(pa[:]), np.asarray(pb[:])), (qa, qb)):
            cos = (x.astype(np.float64) * y).sum(1)  # unit rows
            worst = min(worst, float(cos.min()))
    assert worst > 0.9999, f"bf16 rows agree with fp32 only to cos {worst:.6f}"
    print(f"bf16 vs fp32 worst row cosine {worst:.6f}")
