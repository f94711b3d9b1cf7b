"""Ctrl-C: a real SIGINT to the foreground process group of every kind of command.

Each command runs in its own session (its own process group, as a shell's foreground job) and
gets SIGINT from outside at several points of its life (start-up, loading, working). It must
exit 130 with the one line "interrupted: ... rerun ...", print no id on stdout, and a rerun must
then succeed.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.reliability import helpers as H
from tests.reliability.conftest import copy_store


# Before ~0.1 s the signal may land while the interpreter itself starts (importing `site`), before
# any tselect code exists to handle it; every delay below is past that.


def _interrupt(args, store, delay: float, extra_env=None, faults=False):
    proc = H.spawn(*args, store=store, faults=faults, extra_env=extra_env)
    time.sleep(delay)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to its foreground job on Ctrl-C
    except ProcessLookupError:
        pass
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def _assert_interrupted(rc, out, err, args):
    lines = err.strip().splitlines()
    assert rc == 130, (args, rc, err[-1500:])
    assert lines and lines[-1].startswith("interrupted:") and "rerun" in lines[-1], err[-1500:]
    assert "Traceback" not in err, err[-1500:]
    if args[0] not in ("ls", "verify"):  # (their report may already be out when the signal comes)
        assert out.strip() == "", out  # `F=$(tselect featurize ...)` must not capture an id


def _interrupted_somewhere(args, store_for, delays, **kw) -> int:
    """SIGINT at each delay; every run still going when it arrives must end as an interrupt."""
    hits = 0
    for k, delay in enumerate(delays):
        rc, out, err = _interrupt(args, store_for(k), delay, **kw)
        if rc == 0:  # finished before the signal came: nothing to check at this delay
            continue
        _assert_interrupted(rc, out, err, args)
        hits += 1
    return hits


def test_sigint_featurize_select_ls_verify(big_vectors, tmp_path):
    slow = {"TSELECT_FAULT_SLOW": "0.3"}  # stretch the writes so every delay lands inside the run
    hits = _interrupted_somewhere(big_vectors["args"], lambda k: tmp_path / f"f{k}", [0.2, 0.5, 1.0, 2.5],
                                  extra_env=slow, faults=True)
    assert hits == 4
    # the rerun resumes and gives the reference artifact
    assert H.last_line(H.tselect(*big_vectors["args"], store=tmp_path / "f3")) == big_vectors["aid"]
    st = copy_store(big_vectors["ref"], tmp_path / "sel")
    sel = ["select", "--features", big_vectors["aid"], "--selector", "kcenter", "--budget", "2500"]
    assert _interrupted_somewhere(sel, lambda k: st, [0.2, 0.6, 1.5], extra_env=slow, faults=True) >= 2
    assert H.tselect(*sel, store=st).returncode == 0
    for cmd in (["ls"], ["verify"]):
        assert _interrupted_somewhere(cmd, lambda k: st, [0.12, 0.16, 0.2, 0.25, 0.3]) >= 1, cmd


@pytest.mark.slow
def test_sigint_finetune_evaluate(small_chain, tmp_path):
    st = copy_store(small_chain["ref"], tmp_path / "s")
    ft, ev = small_chain["finetune"], small_chain["evaluate"]
    for aid in (ft, ev):
        import shutil

        shutil.rmtree(H.artifact_dir(st, aid))
    assert _interrupted_somewhere(small_chain["ft_args"], lambda k: st, [0.5, 3.0, 6.0]) >= 2
    assert H.last_line(H.tselect(*small_chain["ft_args"], store=st)) == ft
    assert _interrupted_somewhere(small_chain["ev_args"], lambda k: st, [0.5, 3.0]) >= 1
    assert H.last_line(H.tselect(*small_chain["ev_args"], store=st)) == ev


@pytest.mark.slow
def test_sigint_run(tmp_path):
    from tselect import assets

    try:
        assets.locate("minilm")
    except Exception:  # noqa: BLE001
        pytest.skip("embedded assets are not installed")
    toml = H.REPO / "examples" / "experiments" / "smoke.toml"
    assert _interrupted_somewhere(["run", toml], lambda k: tmp_path / f"r{k}", [1.0, 4.0, 8.0]) >= 2
