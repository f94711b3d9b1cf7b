"""The CLI restates no config default differently: every option named like a config field has the
field's default (options for required fields may offer a convenience default)."""

from __future__ import annotations

import dataclasses

import pytest
import typer

import tselect.cli  # noqa: F401  (registers every command)
from tselect.cli.app import app
from tselect.distance import DistanceConfig
from tselect.evaluate import EvaluateConfig
from tselect.featurize import FeaturizeConfig
from tselect.finetune import FinetuneConfig
from tselect.report import ReportConfig
from tselect.scores import ScoreConfig
from tselect.select import SelectConfig
from tselect.training import TrainConfig
from tselect.warmup import WarmupConfig

COMMANDS = {"featurize": (FeaturizeConfig,), "select": (SelectConfig,), "warmup": (WarmupConfig,),
            "score": (ScoreConfig,), "distance": (DistanceConfig,), "finetune": (FinetuneConfig, TrainConfig),
            "evaluate": (EvaluateConfig,), "report": (ReportConfig,)}
# Data the command line makes the user name (or pass --demo): forgetting --query must not quietly
# featurize against the demo target, while library callers keep the configs' builtin defaults.
REQUIRED_ON_CLI = {"pool", "query", "target"}
# Repeatable options collect into a tuple field of another name.
ALIASES = {"featurize": {"param": "params"}, "select": {"param": "params"}, "distance": {"budget": "budgets"}}


def _same(cli_default, field_default) -> bool:
    if field_default == () and cli_default in (None, "", ()):
        return True  # an empty repeatable / comma-list option is the empty tuple
    return cli_default == field_default


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_defaults_equal_config_defaults(command):
    group = typer.main.get_command(app)
    cmd = group.commands[command]
    fields = {f.name: f for cls in COMMANDS[command] for f in dataclasses.fields(cls)}
    checked = 0
    for param in cmd.params:
        f = fields.get(ALIASES.get(command, {}).get(param.name, param.name))
        if f is None or f.default is dataclasses.MISSING:
            continue
        if param.name in REQUIRED_ON_CLI and param.default is None:
            continue
        checked += 1
        assert _same(param.default, f.default), (f"tselect {command} --{param.name.replace('_', '-')} defaults to "
                                                 f"{param.default!r}, the config field {f.name} to {f.default!r}")
    assert checked, f"no option of `tselect {command}` matched a config field"
