"""Random projections of per-example gradients, seeded by parameter name.

A projector maps one parameter's per-example gradient [B, *shape] to [B, dim]. The projection
of the concatenated gradient of many parameters is the SUM of the per-parameter projections,
each with its own randomness, so the full [B, P] gradient never has to exist in memory.

Randomness is a pure function of (f"{name}:{seed}", coordinate): polynomial hashes modulo the
Mersenne prime 2^31-1 whose coefficients come from SHAKE-256 of the key. Every entry can be
recomputed anywhere — any shard, host, device, block size or torch version gives the same
matrix — so nothing is stored. Degree-3 polynomials are 4-wise independent, which is what the
JL/CountSketch variance bounds assume.

Imports torch at module top: only the featurize stage imports this module, lazily.
"""

from __future__ import annotations

import hashlib
import math
from typing import Protocol

import numpy as np
import torch

MERSENNE = (1 << 31) - 1  # p; coordinates and coefficients live in [0, p)
DEGREE = 3  # polynomial degree: 4-wise independent hash family


class Projector(Protocol):
    """Maps one named parameter's per-example gradient g [B, *shape] to [B, dim] (fp32)."""

    dim: int
    seed: int

    def project(self, name: str, g: torch.Tensor) -> torch.Tensor: ...


def hash_coefficients(key: str, n: int) -> np.ndarray:
    """n integers in [0, p) drawn from SHAKE-256(key): stable across processes and hosts."""
    raw = hashlib.shake_256(key.encode("utf-8")).digest(8 * n)
    return (np.frombuffer(raw, dtype="<u8") % np.uint64(MERSENNE)).astype(np.int64)


def _mod_p(y: torch.Tensor) -> torch.Tensor:
    # y in [0, 2^63): fold twice using 2^31 ≡ 1 (mod p), then one conditional subtract.
    y = (y & MERSENNE) + (y >> 31)
    y = (y & MERSENNE) + (y >> 31)
    return torch.where(y >= MERSENNE, y - MERSENNE, y)


def poly_hash(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """h(x) = Σ_k c_k x^k mod p by Horner, int64 throughout without overflow.

    x: int64 in [0, p), any shape; coeffs [DEGREE+1, *cshape] (highest power first), broadcast
    against x. Every product is < 2^62, so int64 arithmetic is exact on every device.
    """
    h = coeffs[0]
    for c in coeffs[1:]:
        h = _mod_p(h * x + c)
    return h


def _check_numel(name: str, numel: int) -> None:
    if numel >= MERSENNE:
        raise ValueError(f"parameter {name!r} has {numel} entries; projections hash coordinates "
                         f"below 2^31-1, so split it into smaller named pieces")


class SparseJL:
    """CountSketch / sparse JL: each coordinate adds ±1/√s into `s` buckets, one per block.

    The dim outputs are split into s blocks of dim/s; coordinate i lands in one hashed bucket of
    every block with an independent hashed sign, so its s buckets are always distinct. Cost is
    O(s·P) per example with no matmul — the fast choice on CPU. Bucket/sign tables are cached
    per (name, numel, device): s·P int64 + s·P fp32 values.
    """

    def __init__(self, dim: int, seed: int = 0, s: int = 1):
        if dim < 1 or s < 1 or dim % s:
            raise ValueError(f"SparseJL needs dim divisible by s >= 1, got dim={dim}, s={s}")
        self.dim, self.seed, self.s = dim, seed, s
        self._tables: dict[tuple[str, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _table(self, name: str, numel: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (name, numel, device)
        if key not in self._tables:
            _check_numel(name, numel)
            width = self.dim // self.s
            # [s, 2, DEGREE+1]: per block, bucket coefficients then sign coefficients.
            c = torch.from_numpy(hash_coefficients(f"{name}:{self.seed}", self.s * 2 * (DEGREE + 1)))
            c = c.view(self.s, 2, DEGREE + 1, 1).to(device)
            x = torch.arange(numel, dtype=torch.int64, device=device)  # [P]
            blocks = torch.arange(self.s, device=device)[:, None] * width  # [s, 1]
            idx = torch.stack([poly_hash(x, c[k, 0]) for k in range(self.s)]) % width + blocks  # [s, P]
            bit = torch.stack([poly_hash(x, c[k, 1]) for k in range(self.s)]) & 1  # [s, P]
            sign = (bit * 2 - 1).to(torch.float32) / math.sqrt(self.s)
            self._tables[key] = (idx.reshape(-1), sign.reshape(-1))  # [s·P] each
        return self._tables[key]

    def project(self, name: str, g: torch.Tensor) -> torch.Tensor:
        flat = g.reshape(g.shape[0], -1).float()  # [B, P]
        idx, sign = self._table(name, flat.shape[1], flat.device)
        src = (flat if self.s == 1 else flat.repeat(1, self.s)) * sign  # [B, s·P]
        out = torch.zeros(flat.shape[0], self.dim, dtype=torch.float32, device=flat.device)
        # index_add_ along dim 1 with the 1-D index: bit-identical to scatter_add_ with the
        # expanded [B, s·P] index (same per-row order), as fast once warm (0.03 ms for
        # [16, 4608] -> 8192 on CPU, torch 2.13), and with s = 1 no repeat copy.
        return out.index_add_(1, idx, src)  # [B, dim]


MAX_DENSE_ENTRIES = 1 << 28  # P·dim budget of a dense projection: 1 GiB of fp32, cached whole


def check_dense_budget(numel: int, dim: int, max_entries: int = MAX_DENSE_ENTRIES) -> None:
    """Refuse a dense projection of `numel` total coordinates whose P×dim matrix exceeds the budget.

    Within the budget the matrix is generated once and cached (one matmul per factor and batch);
    beyond it, it would be regenerated for every batch: at 7B-LoRA scale (P = 134M, d = 8192)
    1.1e12 entries in ~5e5 blocks of ~44 kernels, minutes of host-bound work per batch.
    """
    from tselect.errors import UserError

    if numel * dim > max_entries:
        blocks = -(-numel // 256)
        raise UserError(f"projection=rademacher needs a {numel:,}x{dim} sign matrix ({numel * dim * 4 / 2**30:,.1f} "
                        f"GiB fp32, budget {max_entries * 4 / 2**30:.1f} GiB), regenerated every batch as {blocks:,} "
                        f"blocks of ~44 kernels; use --param projection=kronecker (dense quality) or sjlt")


class DenseRademacher:
    """Dense JL with entries ±1/√dim, generated in row blocks and applied as fp32 matmuls.

    Row i's signs are the low BITS bits of h_c(i) for chunks c of BITS output columns, with
    independent coefficients per chunk: one hash gives 30 signs, and any block of input
    coordinates can be generated alone, on any device. block_rows only bounds memory
    ([block_rows, dim] temporaries). Whole matrices are cached per name up to `cache_bytes`
    in total (fp32), which makes repeated batches on small adapters cheap. Only for small P:
    past `max_entries` (P·dim over all names) it refuses, naming the alternatives.
    """

    BITS = 30  # signs per hash value: bits 0..29 of a uniform value in [0, 2^31-1)

    def __init__(self, dim: int, seed: int = 0, block_rows: int = 256, cache_bytes: int = 4 * MAX_DENSE_ENTRIES,
                 max_entries: int = MAX_DENSE_ENTRIES):
        if dim < 1 or block_rows < 1:
            raise ValueError(f"DenseRademacher needs dim >= 1 and block_rows >= 1, got {dim}, {block_rows}")
        self.dim, self.seed, self.block_rows, self.cache_bytes = dim, seed, block_rows, cache_bytes
        self.max_entries = max_entries
        self._sizes: dict[str, int] = {}  # name → numel seen: the budget covers their sum
        self._coeffs: dict[tuple[str, torch.device], torch.Tensor] = {}
        self._cache: dict[tuple[str, int, torch.device], torch.Tensor] = {}
        self._cached = 0

    def block(self, name: str, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Rows start:stop of the [P, dim] matrix for `name`, fp32 ±1/√dim."""
        chunks = -(-self.dim // self.BITS)
        key = (name, device)
        if key not in self._coeffs:
            c = hash_coefficients(f"{name}:{self.seed}", (DEGREE + 1) * chunks)
            self._coeffs[key] = torch.from_numpy(c).view(DEGREE + 1, 1, chunks).to(device)
        x = torch.arange(start, stop, dtype=torch.int64, device=device)[:, None]  # [rows, 1]
        h = poly_hash(x, self._coeffs[key]).to(torch.int32)  # [rows, chunks], < 2^31
        shifts = torch.arange(self.BITS, dtype=torch.int32, device=device)
        bits = ((h[..., None] >> shifts) & 1).to(torch.float32)  # [rows, chunks, BITS]
        bits = bits.reshape(stop - start, -1)[:, : self.dim]  # [rows, dim] in {0, 1}
        scale = 1.0 / math.sqrt(self.dim)
        return bits.mul_(2 * scale).sub_(scale)  # {0,1} → ±1/√dim

    def _matrix(self, name: str, numel: int, device: torch.device) -> torch.Tensor | None:
        key = (name, numel, device)
        if key not in self._cache:
            size = numel * self.dim * 4
            if self._cached + size > self.cache_bytes:
                return None
            self._cache[key] = torch.cat([self.block(name, s, min(s + self.block_rows, numel), device)
                                          for s in range(0, numel, self.block_rows)])
            self._cached += size
        return self._cache[key]

    def project(self, name: str, g: torch.Tensor) -> torch.Tensor:
        flat = g.reshape(g.shape[0], -1).float()  # [B, P]
        numel = flat.shape[1]
        _check_numel(name, numel)
        if self._sizes.get(name) != numel:
            check_dense_budget(sum(self._sizes.values()) - self._sizes.get(name, 0) + numel, self.dim,
                               self.max_entries)
            self._sizes[name] = numel
        full = self._matrix(name, numel, flat.device)
        if full is not None:
            return flat @ full  # [B, P] @ [P, dim]
        out = torch.zeros(flat.shape[0], self.dim, dtype=torch.float32, device=flat.device)
        for s in range(0, numel, self.block_rows):
            e = min(s + self.block_rows, numel)
            out.addmm_(flat[:, s:e], self.block(name, s, e, flat.device))  # fp32 accumulation
        return out


def kron_split(dim: int, out: int, inp: int) -> tuple[int, int]:
    """(k_out, k_in) with k_out·k_in = dim for an [out, in] factor.

    A rank-1 gradient u vᵀ projects to (Lu)(Rv)ᵀ, whose squared norm has relative variance
    ≈ 2/k_out + 2/k_in, smallest at k_out ≈ k_in ≈ √dim; so k_out is the largest divisor of
    dim not above √dim. A side of size 1 (a bias or vector) gets all of dim on the other side.
    """
    if inp == 1:
        return dim, 1
    if out == 1:
        return 1, dim
    k = max(d for d in range(1, math.isqrt(dim) + 1) if dim % d == 0)
    return k, dim // k


class KroneckerJL:
    """Two-sided (Kronecker) projection per factor: G [B, out, in] ↦ L G Rᵀ [B, k_out, k_in].

    L [k_out, out] and R [k_in, in] hold ±1/√k signs from the name-seeded hash (the dense
    generator with keys "{name}:L" / "{name}:R"), built once per (name, device) and cached:
    (k_out·out + k_in·in) fp32 values instead of the dense out·in·dim. Each factor's k_out·k_in
    = dim outputs are added into the shared [B, dim] row; factors use independent L, R, so the
    sum of per-factor maps is a JL map of the concatenated gradient (E[MᵀM] = I). Summing,
    rather than giving each of F factors a dim/F slice, keeps k_out, k_in ≈ √dim per factor:
    with 256 factors a slice would leave 32 outputs per factor (k ≈ 4×8) and rank-1 gradients
    would be preserved only to ~90% relative error. Cost: two small matmuls per factor.
    """

    def __init__(self, dim: int, seed: int = 0):
        if dim < 1:
            raise ValueError(f"KroneckerJL needs dim >= 1, got {dim}")
        self.dim, self.seed = dim, seed
        self._mats: dict[tuple[str, tuple[int, int], torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def matrices(self, name: str, out: int, inp: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(L [k_out, out], Rᵀ [in, k_in]) fp32, cached per (name, shape, device)."""
        key = (name, (out, inp), device)
        if key not in self._mats:
            k_out, k_in = kron_split(self.dim, out, inp)
            lt = DenseRademacher(k_out, self.seed).block(f"{name}:L", 0, out, device)  # [out, k_out]
            rt = DenseRademacher(k_in, self.seed).block(f"{name}:R", 0, inp, device)  # [in, k_in]
            self._mats[key] = (lt.T.contiguous(), rt)
        return self._mats[key]

    def project(self, name: str, g: torch.Tensor) -> torch.Tensor:
        b = g.shape[0]
        g = g.float()
        g = g.reshape(b, g.shape[1], -1) if g.dim() > 2 else g.reshape(b, -1, 1)  # [B, out, in]
        _check_numel(name, g.shape[1] * g.shape[2])
        left, rt = self.matrices(name, g.shape[1], g.shape[2], g.device)
        # contract the larger side first: fewer FLOPs and a smaller temporary
        if g.shape[2] >= g.shape[1]:
            y = left @ (g @ rt)  # [k_out, out] @ [B, out, k_in]
        else:
            y = (left @ g) @ rt  # [B, k_out, in] @ [in, k_in]
        return y.reshape(b, self.dim)  # [B, k_out·k_in = dim]


PROJECTIONS: dict[str, type] = {"sjlt": SparseJL, "rademacher": DenseRademacher, "kronecker": KroneckerJL}


def make_projector(kind: str, dim: int, seed: int = 0) -> Projector:
    """PROJECTIONS[kind](dim, seed); an unknown kind names the valid ones."""
    if kind not in PROJECTIONS:
        raise ValueError(f"unknown projection {kind!r}; choose one of {', '.join(PROJECTIONS)}")
    return PROJECTIONS[kind](dim=dim, seed=seed)
