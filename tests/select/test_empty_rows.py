"""Pool rows without a feature (LESS: no response token within max_length) are never chosen first.

Their similarity to every query is exactly 0, which outranks every negative cosine: before this
rule, top-k on LESS features of the embedded pool picked eight rows that cannot be trained on.
"""

from __future__ import annotations

import json

import numpy as np

from tselect import artifacts, store
from tselect.featurize import run as featurize
from tselect.featurize.config import FeaturizeConfig
from tselect.select import SelectConfig, usable_first
from tselect.select import run as select


def test_usable_first_exact():
    order, used = np.array([5, 2, 7, 1, 0]), np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    got, got_used = usable_first(order, used, np.array([2, 1]), 3)
    assert got.tolist() == [5, 7, 0] and got_used.tolist() == [0.9, 0.7, 0.5]
    got, _ = usable_first(order, None, np.array([2, 1]), 5)  # nothing else left: empty rows come last
    assert got.tolist() == [5, 7, 0, 2, 1]
    got, _ = usable_first(order, None, np.zeros(0, dtype=np.int64), 2)
    assert got.tolist() == [5, 2]


def test_less_topk_never_picks_rows_without_a_gradient(tmp_path, tiny_model_dir):
    long = "word " * 300  # the prompt alone fills max_length, so the response is cut away
    rows = [{"prompt": f"Question {i}: what is {i} plus {i}?", "completion": f"{2 * i}."} for i in range(8)]
    rows[1]["prompt"] = rows[4]["prompt"] = rows[6]["prompt"] = long
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "q.jsonl").write_text(json.dumps({"prompt": "What is 3 plus 3?", "completion": "6."}) + "\n")
    root = tmp_path / "store"
    fid = featurize(FeaturizeConfig(rep="less", pool=str(tmp_path / "pool.jsonl"), query=str(tmp_path / "q.jsonl"),
                                    model=str(tiny_model_dir), max_length=64, dtype="float32",
                                    params=(("dim", "64"),)), root)
    attrs = store.open_features(artifacts.final_dir(root, fid)).attrs
    assert attrs["empty_pool_rows"] == [1, 4, 6] and attrs["zero_rows"]["pool"] == 3
    for selector in ("topk", "round_robin", "uot"):
        five = select(SelectConfig(features=fid, selector=selector, budget=5), root)
        assert not {1, 4, 6} & set(store.read_indices(artifacts.final_dir(root, five) / "indices.json").tolist())
        whole = select(SelectConfig(features=fid, selector=selector), root)
        order = store.read_indices(artifacts.final_dir(root, whole) / "indices.json").tolist()
        assert sorted(order[-3:]) == [1, 4, 6] and sorted(order) == list(range(8))
