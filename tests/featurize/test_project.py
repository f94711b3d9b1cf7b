"""Name-seeded projections: JL inner-product property, determinism, and what composes."""

from __future__ import annotations

import math

import pytest
import torch

from tselect.featurize.project import (MERSENNE, PROJECTIONS, DenseRademacher, SparseJL,
                                       hash_coefficients, make_projector, poly_hash)

DIM = 2048
SHAPES = {"layer.0.lora_A.weight": (16, 64), "layer.0.lora_B.weight": (64, 16), "layer.1.bias": (500,)}


def project_all(proj, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The projection of the concatenated gradient: Σ over names of per-name projections."""
    return sum(proj.project(name, g) for name, g in parts.items())


def random_pairs(n: int, seed: int):
    """n pairs (g, q) over SHAPES; q = c·g + √(1−c²)·noise, c uniform in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    g = {k: torch.randn(n, *s, generator=gen) for k, s in SHAPES.items()}
    c = torch.rand(n, generator=gen) * 2 - 1
    q = {}
    for k, s in SHAPES.items():
        cc = c.view(n, *([1] * len(s)))
        q[k] = cc * g[k] + (1 - cc**2).sqrt() * torch.randn(n, *s, generator=gen)
    return g, q


def flat(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(v.shape[0], -1) for v in parts.values()], dim=1)


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_inner_products_preserved(kind):
    # For a JL map with independent ±1/√dim (dense) or hashed CountSketch entries,
    # z = (⟨Pg,Pq⟩ − ⟨g,q⟩)·√dim / (‖g‖‖q‖) has mean 0 and variance
    # 1 + cos² − 2Σg_i²q_i²/(‖g‖²‖q‖²) ≤ 2, so E|z| ≈ 0.8–1.1. Over 300 pairs the mean |z| has standard error ≈ 0.04 and the
    # signed mean ≈ 0.07: bounds of 1.3 and 0.35 are > 5 standard errors away.
    proj = make_projector(kind, DIM, seed=0)
    g, q = random_pairs(300, seed=1)
    pg, pq = project_all(proj, g), project_all(proj, q)  # [n, DIM]
    fg, fq = flat(g), flat(q)
    true = (fg * fq).sum(1)
    z = ((pg * pq).sum(1) - true) * math.sqrt(DIM) / (fg.norm(dim=1) * fq.norm(dim=1))
    assert z.abs().mean() < 1.3, (
        f"{kind}: mean |error| is {z.abs().mean():.2f}·‖g‖‖q‖/√dim (expected ≈0.8–1.1); "
        f"a missing 1/√dim or 1/√s scale, or buckets/signs reused across coordinates?")
    assert abs(z.mean()) < 0.35, (
        f"{kind}: inner products are biased by {z.mean():.2f}·‖g‖‖q‖/√dim; signs not balanced ±1?")
    ratio = (pg.norm(dim=1) / fg.norm(dim=1)) ** 2
    assert abs(ratio.mean() - 1) < 0.02, (
        f"{kind}: E‖Pg‖²/‖g‖² = {ratio.mean():.3f}, expected 1 ± 0.01; wrong output scale")


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_different_names_get_independent_randomness(kind):
    # u under name a and u under name b are orthogonal as parts of the concatenated gradient.
    # With shared randomness ⟨P_a u, P_b u⟩ would be ‖u‖²; independent draws give O(‖u‖²/√dim).
    proj = make_projector(kind, DIM, seed=0)
    u = torch.randn(20, 1000, generator=torch.Generator().manual_seed(2))
    z = (proj.project("a", u) * proj.project("b", u)).sum(1) * math.sqrt(DIM) / (u.norm(dim=1) ** 2)
    assert z.abs().mean() < 1.5, (
        f"{kind}: projections of names 'a' and 'b' correlate (mean |z| {z.abs().mean():.1f}, "
        f"≈√{DIM}={math.sqrt(DIM):.0f} if identical); is the name part of the hash key?")


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_same_name_and_seed_reproduce_across_instances(kind):
    g = torch.randn(3, 40, 7, generator=torch.Generator().manual_seed(3))
    a = make_projector(kind, 256, seed=5).project("x", g)
    assert torch.equal(a, make_projector(kind, 256, seed=5).project("x", g))
    assert not torch.allclose(a, make_projector(kind, 256, seed=6).project("x", g))
    assert not torch.allclose(a, make_projector(kind, 256, seed=5).project("y", g))


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_linear_rowwise_and_split_dependent(kind):
    # What holds: P is linear per name, each row is projected on its own (batch composition
    # never matters), and a multi-parameter gradient projects as the sum of its named parts.
    # What does not: re-splitting the same vector under other names/shapes changes the
    # projection, so features are comparable only for identical adapter layouts.
    proj = make_projector(kind, 256, seed=0)
    gen = torch.Generator().manual_seed(4)
    g, h = torch.randn(4, 300, generator=gen), torch.randn(4, 300, generator=gen)
    assert torch.allclose(proj.project("w", 2 * g - 3 * h),
                          2 * proj.project("w", g) - 3 * proj.project("w", h), atol=1e-4)
    rows = torch.cat([proj.project("w", g[i : i + 1]) for i in range(4)])
    assert torch.allclose(proj.project("w", g), rows, atol=1e-5)
    split = proj.project("w1", g[:, :100]) + proj.project("w2", g[:, 100:])
    assert not torch.allclose(proj.project("w", g), split, atol=1e-2)


def test_dense_blocks_are_independent_of_block_height_and_cache():
    g = torch.randn(2, 1000, generator=torch.Generator().manual_seed(5))
    cached = DenseRademacher(128, seed=1).project("w", g)
    streamed = DenseRademacher(128, seed=1, block_rows=7, cache_bytes=0).project("w", g)
    assert torch.allclose(cached, streamed, atol=1e-5)


def test_dense_entries_are_balanced_signs():
    m = DenseRademacher(300, seed=0).block("w", 0, 400, torch.device("cpu"))  # [400, 300]
    assert set(torch.unique(m * math.sqrt(300)).tolist()) == {-1.0, 1.0}
    assert abs(float(m.sign().mean())) < 0.01  # 120k signs: standard error 0.003


def test_sjlt_puts_each_coordinate_in_s_distinct_blocks():
    proj = SparseJL(dim=64, seed=0, s=4)
    out = proj.project("w", torch.eye(50))  # row i = projection of basis vector e_i, [50, 64]
    nz = out != 0
    assert torch.equal(nz.view(50, 4, 16).sum(2), torch.ones(50, 4, dtype=torch.long))
    assert torch.equal(out[nz].abs(), torch.full((200,), 0.5))


def test_poly_hash_is_exact_modular_arithmetic():
    c = hash_coefficients("name:0", 4)
    xs = [0, 1, 2, 123_456_789, MERSENNE - 1]
    got = poly_hash(torch.tensor(xs), torch.from_numpy(c).view(4, 1)).tolist()
    want = [sum(int(c[k]) * x ** (3 - k) for k in range(4)) % MERSENNE for x in xs]
    assert got == want


def test_unknown_projection_names_the_choices():
    with pytest.raises(ValueError, match="sjlt, rademacher"):
        make_projector("gaussian", 16)


# --- scaling: op counts, the dense budget, the Kronecker factors ---------------------------------

def ops_per_project(kind: str, shape: tuple[int, ...], dim: int = 1024) -> int:
    """aten ops of one warm project() call (tables/matrices already built for this name)."""
    from .dispatch import OpCounter

    proj = make_projector(kind, dim, seed=0)
    g = torch.randn(3, *shape, generator=torch.Generator().manual_seed(7))
    proj.project("w", g)  # builds the per-name tables once (once per checkpoint in featurize)
    with OpCounter() as counter:
        proj.project("w", g)
    return counter.count


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_ops_per_batch_do_not_grow_with_parameter_size(kind):
    # O(number of factors), not O(P / block): a factor 16x larger must dispatch the same ops.
    # The shipped dense projector regenerated its signs in 256-row blocks of ~44 ops each.
    small, large = ops_per_project(kind, (8, 16)), ops_per_project(kind, (8, 256))
    assert small == large and large <= 12, (
        f"{kind}: {small} aten ops for an 8x16 factor, {large} for 8x256; per-batch work must not "
        "loop over blocks of the parameter (regenerating the projection per batch?)")


def test_dense_refuses_above_its_budget_and_names_the_alternatives():
    from tselect.errors import UserError

    proj = DenseRademacher(8192, seed=0)
    proj.project("a", torch.zeros(1, 16, 1024))  # 16K x 8192 = 2^27 entries: within budget
    with pytest.raises(UserError, match=r"kronecker .* or sjlt") as err:
        proj.project("b", torch.zeros(1, 32, 1024))  # the total would pass 2^28
    assert "49,152x8192" in str(err.value) and "\n" not in str(err.value)
    seven_b = 134_217_728
    with pytest.raises(UserError, match=r"4,096\.0 GiB fp32"):
        from tselect.featurize.project import check_dense_budget

        check_dense_budget(seven_b, 8192)


def test_kronecker_is_left_and_right_sign_matrices():
    from tselect.featurize.project import KroneckerJL, kron_split

    assert kron_split(8192, 128, 4096) == (64, 128)
    assert kron_split(8192, 4096, 128) == (64, 128)
    assert kron_split(2048, 500, 1) == (2048, 1)
    assert kron_split(7, 3, 5) == (1, 7)  # a prime dim degenerates to a one-sided map
    proj = KroneckerJL(32, seed=0)
    g = torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(8))
    left, rt = proj.matrices("w", 6, 10, torch.device("cpu"))  # [4, 6], [10, 8]
    assert left.shape == (4, 6) and rt.shape == (10, 8)
    assert set((left.abs() * 2).flatten().tolist()) == {1.0}  # ±1/√4
    assert torch.allclose(rt.abs(), torch.full_like(rt, 8 ** -0.5))
    want = torch.stack([(left @ g[b] @ rt).flatten() for b in range(2)])
    assert torch.allclose(proj.project("w", g), want, atol=1e-6), "L·G·Rᵀ per example, flattened row-major"
    other = KroneckerJL(32, seed=0).matrices("v", 6, 10, torch.device("cpu"))[0]
    assert not torch.equal(left, other), "each factor name must get its own L, R"


@pytest.mark.parametrize("s", [1, 4])
def test_sjlt_equals_its_explicit_sparse_matrix_and_the_scatter_form(s):
    # project(g) = g @ S with S[i, idx] = sign; accumulated with index_add_, it must also keep the
    # bits of the scatter_add_ form used before (stored LESS features did not change).
    proj = SparseJL(256, seed=2, s=s)
    gen = torch.Generator().manual_seed(5)
    g = torch.randn(3, 40, 30, generator=gen)
    got = proj.project("w", g)
    idx, sign = proj._table("w", 1200, g.device)
    dense = torch.zeros(s * 1200, 256, dtype=torch.float64)
    dense[torch.arange(s * 1200), idx] = sign.double()
    want = g.reshape(3, -1).double().repeat(1, s) @ dense
    assert torch.allclose(got.double(), want, rtol=0, atol=1e-5)
    src = g.reshape(3, -1).repeat(1, s) * sign
    scattered = torch.zeros(3, 256).scatter_add_(1, idx.expand_as(src), src)
    assert torch.equal(got, scattered)
