"""The experiment TOML: parsing, validation, and the stage configs and identities it implies.

    [experiment]   name, pool, model, targets, representations, selectors, budgets, seeds,
                   random_seeds (min count, >= 3), full, full_seeds, full_max_pool
    [featurize]    FeaturizeConfig options for every rep; [featurize.<rep>] overrides
                   (model, params = {...}, *_vectors, ...)
    [select.<selector>]  selector parameters (as `--param NAME=VALUE`)
    [finetune]     TrainConfig options;   [evaluate] EvaluateConfig options (+ [evaluate.eval_data])
    [quantile]     bins, per_bin, selector, representations, targets, seeds
    [estimate]     per-unit seconds for `--dry-run` (see tselect.experiment.estimate)

Relative paths are relative to the TOML file; `$VAR` and `~` are expanded.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from tselect import identity
from tselect.errors import UserError
from tselect.validate import INT_LIMIT

MIN_RANDOM_SEEDS = 3
EXPERIMENT_KEYS = ("name", "pool", "model", "targets", "representations", "selectors", "budgets", "seeds",
                   "random_seeds", "full", "full_seeds", "full_max_pool")
SECTIONS = ("experiment", "featurize", "select", "finetune", "evaluate", "quantile", "estimate")


@dataclass(frozen=True)
class Quantile:
    bins: int = 10
    """Contiguous bins the whole-pool ordering is cut into (bin 0 = nearest to the queries)."""
    per_bin: int = 500
    """Examples trained on per bin: the head of the bin, in selector order."""
    selector: str = "round_robin"
    representations: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class Spec:
    name: str
    pool: str
    targets: dict[str, str]  # label → query spec, in TOML order
    representations: tuple[str, ...]
    selectors: tuple[str, ...]  # non-random; random rows are always added
    budgets: tuple[int, ...]
    seeds: tuple[int, ...]
    random_seeds: tuple[int, ...]
    model: str | None = None
    full: bool = False
    full_seeds: tuple[int, ...] = ()
    full_max_pool: int = 5000
    featurize: dict[str, Any] = field(default_factory=dict)
    rep_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    selector_params: dict[str, dict[str, str]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    eval_data: dict[str, str] = field(default_factory=dict)
    quantile: Quantile | None = None
    estimate: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the TOML path (messages only; not hashed)

    NOT_HASHED: ClassVar[dict[str, str]] = {"source": "the TOML path, used in messages only"}

    # --- stage configs ----------------------------------------------------------------------
    def featurize_config(self, rep: str, target: str):
        from tselect.featurize import REPRESENTATIONS
        from tselect.featurize.config import FeaturizeConfig

        opts = {**self.featurize, **self.rep_options.get(rep, {})}
        uses_lm = rep in REPRESENTATIONS and REPRESENTATIONS[rep].uses_lm  # the LM reps default to [experiment] model
        model = opts.pop("model", self.model if uses_lm else None)
        params = opts.pop("params", None) or {}
        if isinstance(opts.get("query_vectors"), dict):
            opts["query_vectors"] = _lookup(opts["query_vectors"], target, f"[featurize.{rep}] query_vectors")
        known = {f.name for f in dataclasses.fields(FeaturizeConfig)}
        if params and "params" in known:
            opts["params"] = tuple(sorted((k, str(v)) for k, v in params.items()))
        unknown = sorted(set(opts) - known)
        if unknown and rep in REPRESENTATIONS:  # an unregistered rep is reported by the featurize stage
            raise UserError(f"[featurize] option {unknown[0]!r} is unknown; valid: {', '.join(sorted(known - {'rep', 'pool', 'query'}))}")
        opts = {k: v for k, v in opts.items() if k in known}
        return _make(FeaturizeConfig, rep=rep, pool=self.pool, query=self.targets[target], model=model, **opts)

    def train_config(self, seed: int):
        from tselect.training import TrainConfig

        return _make(TrainConfig, **{**self.train, "seed": seed})

    def evaluate_config(self, target: str, finetune: str | None):
        from tselect.evaluate import EvaluateConfig

        return _make(EvaluateConfig, target=self.targets[target], eval_data=self.eval_data.get(target),
                     finetune=finetune, model=None if finetune else self.model, **self.evaluate)

    # --- identities ---------------------------------------------------------------------------
    def cell_settings(self, cell) -> dict[str, Any]:
        """What determines a cell's results besides data and model content (those are inputs)."""
        out: dict[str, Any] = {"cell": dataclasses.asdict(cell), "evaluate": self.evaluate}
        if cell.kind == "zero_shot":
            return out
        out["train"] = {**self.train}
        reps = self.representations if cell.kind == "random" else (cell.rep,)
        if cell.kind != "full":
            out["featurize"] = {r: identity.hashed(self.featurize_config(r, cell.targets[0])) for r in reps}
        if cell.kind in ("grid", "random"):
            out["budgets"] = list(self.budgets)  # select at max(budgets), distances at every budget
            out["select"] = self.selector_params.get(cell.selector, {})
        if cell.kind == "quantile":
            out["quantile"] = {"bins": self.quantile.bins, "per_bin": self.quantile.per_bin,
                               "params": self.selector_params.get(cell.selector, {})}
        return out

    def identity(self) -> Identity:
        return Identity(self)

    def as_dict(self) -> dict[str, Any]:
        return identity.hashed(self)


class Identity:
    """Content identities (pool, targets, model, representations) that key the cell artifacts."""

    def __init__(self, spec: Spec):
        from tselect.data import load_dataset

        self.spec = spec
        self.pool = load_dataset(spec.pool)
        self.n_pool = len(self.pool)
        bad = [b for b in spec.budgets if b > self.n_pool]
        if bad:
            raise UserError(f"budget {bad[0]} exceeds the pool ({self.n_pool} rows of {spec.pool}); lower budgets")
        self._reps: dict[str, dict[str, str]] = {}

    @cached_property
    def model(self) -> str:
        from tselect.models import resolve_model

        return resolve_model(self.spec.model).fingerprint

    @cached_property
    def targets(self) -> dict[str, str]:
        from tselect.data import load_dataset
        from tselect.evaluate import eval_spec

        out = {}
        for label in self.spec.targets:
            out[f"target:{label}"] = load_dataset(self.spec.targets[label]).content_hash
            ev = eval_spec(self.spec.evaluate_config(label, None))
            out[f"eval:{label}"] = load_dataset(ev).content_hash if ev else "none"
        return out

    def rep(self, rep: str) -> dict[str, str]:
        from tselect.featurize import REPRESENTATIONS

        if rep not in self._reps:
            if rep not in REPRESENTATIONS:
                raise UserError(f"unknown representation '{rep}'; choose one of {', '.join(REPRESENTATIONS)}")
            cfg = self.spec.featurize_config(rep, next(iter(self.spec.targets)))
            self._reps[rep] = {f"rep:{rep}:{k}": v for k, v in REPRESENTATIONS[rep].identity(cfg).items()}
        return self._reps[rep]

    def cell_inputs(self, cell) -> dict[str, str]:
        out = {"pool": self.pool.content_hash, "model": self.model}
        out.update({k: v for k, v in self.targets.items() if k.split(":", 1)[1] in cell.targets})
        for rep in (self.spec.representations if cell.kind == "random" else (cell.rep,) if cell.rep else ()):
            out.update(self.rep(rep))
        return out


def _make(cls, **kwargs):
    from tselect.validate import check_config_values

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        section = {"TrainConfig": "[finetune]", "EvaluateConfig": "[evaluate]"}.get(cls.__name__, cls.__name__)
        raise UserError(f"experiment: unknown key {unknown[0]!r} in {section}; valid keys: {', '.join(sorted(known))}")

    check_config_values(cls, kwargs, f"experiment: {cls.__name__} option")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, OverflowError) as e:
        raise UserError(f"experiment: bad {cls.__name__} options: {e}") from None


def _lookup(table: dict, key: str, where: str):
    if key not in table:
        raise UserError(f"{where} has no entry for target '{key}'; add {key} = \"...\"")
    return table[key]


# --- loading -------------------------------------------------------------------------------------

def load_spec(path: str | os.PathLike) -> Spec:
    """The experiment in a TOML file, every section type-checked and every stage config built once,
    so a malformed value is one line now instead of a crash hours into the run."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"experiment file {path} does not exist; see examples/experiments/*.toml") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError) as e:  # ValueError: a 5,000-digit integer
        raise UserError(f"experiment file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise UserError(f"experiment file {path} cannot be read ({e.strerror}); pass a TOML file") from None
    try:
        spec = _spec(raw, path)
        _validate(spec)
    except UserError as e:  # name the file: a grid may read several
        raise UserError(f"experiment file {path}: {str(e).removeprefix('experiment: ')}") from None
    except (TypeError, ValueError, AttributeError, OverflowError, KeyError, IndexError) as e:
        raise UserError(f"experiment file {path} is malformed ({type(e).__name__}: {e}); "
                        "compare it with examples/experiments/smoke.toml") from None
    return spec


def _validate(spec: Spec) -> None:
    """Build every stage config the grid will use (featurize per rep and target, train per seed,
    evaluate per target, selector parameters): their checks run now."""
    from tselect.select import parse_params

    _check_names(spec)
    for rep in spec.representations:
        for target in spec.targets:
            spec.featurize_config(rep, target)
    for seed in dict.fromkeys(spec.seeds + spec.full_seeds):
        spec.train_config(seed)
    for target in spec.targets:
        spec.evaluate_config(target, None)
    for name, params in spec.selector_params.items():
        parse_params(name, tuple(sorted(params.items())))
    _check_estimate_keys(spec.estimate)
    for key, value in spec.estimate.items():
        if not isinstance(value, (int, float, dict)) or isinstance(value, bool):
            raise UserError(f"experiment: [estimate] {key} must be a number, got {value!r}")
    if not 1 <= spec.full_max_pool <= INT_LIMIT:
        raise UserError(f"experiment: full_max_pool must be a positive integer, got {spec.full_max_pool}")


def _check_estimate_keys(estimate: dict) -> None:
    """[estimate] overrides tselect.experiment.COSTS; featurize_row = {<rep> = seconds}."""
    from tselect.experiment import COSTS
    from tselect.featurize import REPRESENTATIONS

    _check_keys(estimate, (*COSTS, "featurize_row"), "[estimate]")
    rows = estimate.get("featurize_row", {})
    if isinstance(rows, dict):
        _check_keys(rows, tuple(REPRESENTATIONS), "[estimate] featurize_row")


def _check_names(spec: Spec) -> None:
    """Representation and selector names, wherever the TOML names one, are registered ones."""
    from tselect.featurize import REPRESENTATIONS
    from tselect.select.registry import SELECTORS

    q = spec.quantile
    reps = [*spec.representations, *spec.rep_options, *(q.representations if q else ())]
    sels = [*spec.selectors, *spec.selector_params, *((q.selector,) if q else ())]
    for where, names, known in (("representation", reps, REPRESENTATIONS), ("selector", sels, SELECTORS)):
        bad = [n for n in names if n not in known]
        if bad:
            raise UserError(f"experiment: unknown {where} {bad[0]!r}; valid: {', '.join(known)}")


def _table(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"experiment: {where} must be a table ([{key}] with key = value lines), got {value!r}"[:300])
    return value


def _spec(raw: dict, path: Path) -> Spec:
    for section in SECTIONS:
        _table(raw, section, f"[{section}]")
    _check_keys(raw, SECTIONS, "the top level")
    base = path.resolve().parent
    exp = raw.get("experiment", {})
    _check_keys(exp, EXPERIMENT_KEYS, "[experiment]")
    targets = _targets(exp.get("targets"), base)
    reps = _names(exp.get("representations"), "representations", required=True)
    seeds = _ints(exp.get("seeds", [0, 1, 2]), "seeds", minimum=0)
    featurize, rep_options = _featurize(raw.get("featurize", {}), base)
    evaluate = dict(raw.get("evaluate", {}))
    eval_data = {k: _path(v, base) for k, v in _table(evaluate, "eval_data", "[evaluate] eval_data").items()}
    evaluate.pop("eval_data", None)
    for name, params in raw.get("select", {}).items():
        _table(raw["select"], name, f"[select.{name}]")
    return Spec(
        name=str(exp.get("name", path.stem)), pool=_path(_need(exp, "pool"), base), targets=targets,
        representations=reps, selectors=tuple(s for s in _names(exp.get("selectors"), "selectors") if s != "random"),
        budgets=tuple(sorted(set(_ints(_need(exp, "budgets"), "budgets", minimum=1)))), seeds=seeds,
        random_seeds=_random_seeds(seeds, int(exp.get("random_seeds", MIN_RANDOM_SEEDS))),
        model=_path(exp["model"], base) if exp.get("model") else None, full=bool(exp.get("full", False)),
        full_seeds=_ints(exp.get("full_seeds", seeds[:1]), "full_seeds", minimum=0),
        full_max_pool=int(exp.get("full_max_pool", 5000)), featurize=featurize, rep_options=rep_options,
        selector_params={k: {p: str(v) for p, v in d.items()} for k, d in raw.get("select", {}).items()},
        train={k: tuple(v) if isinstance(v, list) else v for k, v in raw.get("finetune", {}).items()},
        evaluate=evaluate, eval_data=eval_data, quantile=_quantile(raw.get("quantile"), reps, targets, seeds),
        estimate=dict(raw.get("estimate", {})), source=str(path))


def _check_keys(table: dict, valid: tuple[str, ...], where: str) -> None:
    bad = sorted(set(table) - set(valid))
    if bad:
        raise UserError(f"experiment: unknown key {bad[0]!r} in {where}; valid keys: {', '.join(valid)}")


def _need(table: dict, key: str):
    if key not in table:
        raise UserError(f"experiment: [experiment] needs `{key} = ...` (see examples/experiments/smoke.toml)")
    return table[key]


def _names(value, key: str, required: bool = False) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        example = {"targets": "sciq", "selectors": "round_robin"}.get(key.split(".")[-1], "rds")
        raise UserError(f"experiment: {key} must be a non-empty list of names, e.g. {key} = [\"{example}\"]")
    return tuple(dict.fromkeys(value))


def _ints(value, key: str, minimum: int) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, int) and v >= minimum for v in value):
        raise UserError(f"experiment: {key} must be a non-empty list of integers >= {minimum}, got {value!r}")
    return tuple(dict.fromkeys(value))


def _random_seeds(seeds: tuple[int, ...], count: int) -> tuple[int, ...]:
    """The grid's seeds, padded with the next integers to at least `count` (>= 3) seeds."""
    out, nxt = list(seeds), max(seeds) + 1
    while len(out) < max(count, MIN_RANDOM_SEEDS):
        out, nxt = out + [nxt], nxt + 1
    return tuple(out)


def _path(value: str, base: Path) -> str:
    """builtin:* as is; otherwise $VARs and ~ expanded, relative to the TOML's directory."""
    if not isinstance(value, str):
        raise UserError(f"experiment: expected a path or builtin:* name, got {value!r}")
    if value.startswith("builtin:"):
        return value
    expanded = os.path.expanduser(os.path.expandvars(value))
    unset = re.findall(r"\$\{?(\w+)", expanded)
    if unset:
        raise UserError(f"experiment: environment variable ${unset[0]} in '{value}' is not set; export it first")
    from tselect.data.hub import looks_like_hub_id

    if not (base / expanded).exists() and looks_like_hub_id(expanded):
        return expanded  # a hub id (org/name[@rev]) from the local HF cache, not a path next to the TOML
    return str((base / expanded).resolve())


def _targets(value, base: Path) -> dict[str, str]:
    """Bare names are built-in targets (sciq → builtin:sciq); labels are names or file stems."""
    out = {}
    for t in _names(value, "targets", required=True):
        spec = t if ":" in t or "/" in t or "." in t or "$" in t else f"builtin:{t}"
        spec = _path(spec, base)
        label = spec.split(":", 1)[1] if spec.startswith("builtin:") else Path(spec).stem
        if label in out:
            raise UserError(f"experiment: two targets are both labelled '{label}'; rename one file")
        out[label] = spec
    return out


def _featurize(table: dict, base: Path) -> tuple[dict, dict]:
    shared = {k: v for k, v in table.items() if not isinstance(v, dict)}
    per_rep = {}
    for rep, opts in ((k, v) for k, v in table.items() if isinstance(v, dict)):
        opts = dict(opts)
        for key in ("model", "pool_vectors", "query_vectors"):
            if isinstance(opts.get(key), str):
                opts[key] = _path(opts[key], base)
            elif isinstance(opts.get(key), dict):
                opts[key] = {t: _path(p, base) for t, p in opts[key].items()}
        per_rep[rep] = opts
    return shared, per_rep


def _quantile(table: dict | None, reps, targets, seeds) -> Quantile | None:
    if table is None:
        return None
    _check_keys(table, tuple(f.name for f in dataclasses.fields(Quantile)), "[quantile]")
    q = Quantile(bins=int(table.get("bins", 10)), per_bin=int(table.get("per_bin", 500)),
                 selector=str(table.get("selector", "round_robin")),
                 representations=_names(table.get("representations", list(reps)), "quantile.representations"),
                 targets=_names(table.get("targets", list(targets)), "quantile.targets"),
                 seeds=_ints(table.get("seeds", list(seeds[:1])), "quantile.seeds", minimum=0))
    if q.bins < 2 or q.per_bin < 1:
        raise UserError(f"experiment: [quantile] needs bins >= 2 and per_bin >= 1, got {q.bins}, {q.per_bin}")
    missing = [t for t in q.targets if t not in targets]
    if missing:
        raise UserError(f"experiment: [quantile] target '{missing[0]}' is not one of targets {list(targets)}")
    return q
