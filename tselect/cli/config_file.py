"""`--config FILE` for stage commands: option values from a TOML, YAML or JSON file.

The file's values become click's `default_map`, so a flag given on the command line wins
(click records it as ParameterSource.COMMANDLINE; a file value as DEFAULT_MAP). Keys are the
long option names with `-` or `_` (`max_length`, `max-length`, `format`). A file may hold one
table per command (`[featurize]`, `[select]`, ...): the command's own table is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tselect.errors import UserError

NOT_IN_FILES = ("config", "help")


def read_file(path: Path) -> dict[str, Any]:
    """The file's top-level table; the format from the suffix (.toml, .yaml/.yml, .json)."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"--config {path} does not exist; pass a TOML, YAML or JSON file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--config {path} cannot be read ({e}); pass a TOML, YAML or JSON text file") from None
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UserError(f"--config {path}: YAML needs pyyaml (pip install pyyaml); or use TOML/JSON") from None
            data = yaml.safe_load(text)
        else:
            raise UserError(f"--config {path}: unknown suffix '{suffix}'; name it .toml, .yaml or .json")
    except UserError:
        raise
    except ValueError as e:  # TOMLDecodeError, JSONDecodeError and yaml's errors (not ValueErrors) below
        raise UserError(f"--config {path} is not valid {suffix[1:].upper()}: {e}") from None
    except Exception as e:  # yaml.YAMLError
        raise UserError(f"--config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path} must hold a table of option = value, got {type(data).__name__}")
    return data


def option_names(command) -> dict[str, str]:
    """Every spelling a file may use → the click parameter name."""
    out: dict[str, str] = {}
    for p in command.params:
        if p.name in NOT_IN_FILES or not getattr(p, "opts", None):
            continue
        for opt in p.opts:
            if opt.startswith("--"):
                out[opt[2:]] = p.name
                out[opt[2:].replace("-", "_")] = p.name
        if all(o.startswith("-") for o in p.opts):  # options only; arguments come from the command line
            out.setdefault(p.name, p.name)
    return out


def default_map(command, name: str, data: dict[str, Any], path: Path) -> dict[str, Any]:
    """File keys → {parameter name: value}; one line naming an unknown key and the valid ones."""
    if isinstance(data.get(name), dict):
        data = data[name]
    names = option_names(command)
    out = {}
    for key, value in data.items():
        if key not in names:
            valid = sorted({k.replace("_", "-") for k in names})
            raise UserError(f"--config {path}: unknown key '{key}' for `tselect {name}`; valid: {', '.join(valid)}")
        param = next(p for p in command.params if p.name == names[key])
        if getattr(param, "multiple", False):  # repeatable: a list, or a table NAME = VALUE (--param)
            if isinstance(value, dict):
                value = [f"{k}={v}" for k, v in value.items()]
            elif not isinstance(value, list):
                value = [value]
        out[names[key]] = value
    return out


def _load(ctx: typer.Context, value: str | None) -> str | None:
    if value is None or ctx.resilient_parsing:
        return value
    path = Path(value).expanduser()
    values = default_map(ctx.command, ctx.info_name, read_file(path), path)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    from tselect.progress import debug

    debug(f"--config {path}: {', '.join(f'{k}={v!r}' for k, v in values.items())} (flags on the command line win)")
    return value


ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", is_eager=True, callback=_load, show_default=False,
                 help="Options from a TOML, YAML or JSON file (keys = long option names); flags given here win"),
]

