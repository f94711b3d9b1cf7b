"""Reliability harness: `python -m reliability.run [--quick] [--out reliability/results.json]`.

The heavy loops behind tests/reliability: every write event of a featurize killed (before and
after its rename), seeded timed kills of featurize (vectors, rds, less) and finetune, every bad
input case, every corruptible file kind, fuzzing with thousands of examples, concurrent runs
and determinism of every stage, and the issue-13 classes (silent wrong results, escapes from
the store, SIGINT, recovery; `classes`, with a per-class tally). Writes per category: cases
tried, cases passed, kills, kills survived (rerun gave a byte-identical artifact that verifies), bytes lost (bytes of the
uninterrupted artifact that differ or are missing after the rerun) and the known defects hit.
Kills whose rerun could not finish at all (a stuck .part) are counted in kills_not_resumed, not
in bytes_lost. `--quick` runs a few cases of each category without loading any model (a test
runs it).

Exit status: 0 when every failure is one of the known, reported defects; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.reliability import helpers as H  # noqa: E402
from tests.reliability import scenarios as S  # noqa: E402


def _category() -> dict:
    return {"cases_tried": 0, "cases_passed": 0, "kills": 0, "kills_survived": 0, "kills_data_intact": 0,
            "kills_not_resumed": 0, "bytes_lost": 0, "known_defect_hits": {}, "known_failures": [], "failures": [], "seconds": 0.0}


def _tally(cat: dict, name: str, ok: bool, known: list[str] | None = None, detail=None, kill: dict | None = None):
    cat["cases_tried"] += 1
    cat["cases_passed"] += int(ok)
    for k in known or []:
        cat["known_defect_hits"][k] = cat["known_defect_hits"].get(k, 0) + 1
    if kill is not None:
        killed = bool(kill.get("killed", True))  # a timed kill can come after the run already finished
        cat["kills"] += int(killed)
        cat["kills_survived"] += int(killed and kill["ok"])
        cat["kills_data_intact"] += int(killed and bool(kill.get("resumed")) and kill.get("bytes_lost", 1) == 0)
        cat["kills_not_resumed"] += int(killed and not kill.get("resumed"))
        cat["bytes_lost"] += int(kill.get("bytes_lost") or 0)
    if not ok:
        (cat["known_failures"] if known else cat["failures"]).append({"case": name, "known": known or [],
                                                                     "detail": detail})


class Harness:
    def __init__(self, work: Path, quick: bool, seed: int):
        self.work, self.quick, self.seed = work, quick, seed
        self.rng = random.Random(seed)
        self._model: Path | None = None
        self._chain: dict | None = None

    # --- shared inputs ---------------------------------------------------------------------
    @property
    def model(self) -> Path:
        if self._model is None:
            from tests.tiny_model import build_tiny_model

            self._model = build_tiny_model(self.work / "tiny-model")
        return self._model

    def chain(self, train: bool) -> dict:
        if self._chain is None or (train and "finetune" not in self._chain):
            d = self.work / ("chain-train" if train else "chain")
            shutil.rmtree(d, ignore_errors=True)
            self._chain = S.build_chain(d, self.model if train else None, train=train)
        return self._chain

    def big_vectors(self) -> dict:
        d = self.work / "bigvec"
        if not (d / "ref").is_dir():  # 3,000 rows: 3 pool chunks of ≤ 1,024 rows (200 in --quick: 1)
            inp = H.make_vectors_inputs(d / "in", 200 if self.quick else 3000)
            H.tselect(*H.vectors_args(inp), store=d / "ref")
        inp = {k: d / "in" / v for k, v in (("pool", "pool.jsonl"), ("query", "query.jsonl"),
                                             ("pool_vectors", "p.npy"), ("query_vectors", "q.npy"))}
        args = H.vectors_args(inp)
        aid = H.last_line(H.tselect(*args, store=d / "ref"))
        return {"args": args, "ref": d / "ref", "aid": aid, "dir": d}

    # --- interruption ----------------------------------------------------------------------
    def interrupt(self, cat: dict) -> None:
        bv = self.big_vectors()
        n = S.count_events(bv["args"], self.work / "count", self.work / "events.txt")
        points = [(e, w) for e in range(1, n + 1) for w in ("before", "after")]
        if self.quick:
            points = sorted(self.rng.sample(points, 2))
        kdir = self.work / "kills"

        def one(p):
            return S.event_kill(bv["args"], bv["ref"], bv["aid"], kdir / f"vec-{p[0]}-{p[1]}", *p)

        with ThreadPoolExecutor(2) as pool:
            for p, o in zip(points, pool.map(one, points)):
                _tally(cat, f"featurize vectors, kill at write {p[0]} ({p[1]} rename)", o["ok"],
                       o["known_defects"] if not S.unexplained(o) else None, _brief(o), kill=o)
        if self.quick:
            return
        # Timed kills from outside while the build is stretched (sleep before each write).
        window = 23 * 0.05
        for k in range(20):
            store = kdir / f"vec-timed-{k}"
            o = self._timed(bv["args"], bv["ref"], bv["aid"], store, lambda part: part.is_dir(), window,
                            extra_env={"TSELECT_FAULT_SLOW": "0.05"})
            _tally(cat, f"featurize vectors, SIGKILL after {o['delay_s']}s", o["ok"],
                   o["known_defects"] if not S.unexplained(o) else None, _brief(o), kill=o)
        self._interrupt_models(cat, kdir)

    def _timed(self, args, ref, aid, store, start_when, window, extra_env=None, stage="featurize", seed_store=None):
        if seed_store is not None:
            shutil.copytree(seed_store, store, dirs_exist_ok=True)
        part = H.artifact_dir(store, aid).with_suffix(".part")
        proc = H.spawn(*args, store=store, faults=bool(extra_env), extra_env=extra_env)
        H.wait_for(lambda: start_when(part) or proc.poll() is not None, 600)
        delay = self.rng.uniform(0, window)
        time.sleep(delay)
        H.kill9(proc)
        at_kill = S._probe(part) if stage == "featurize" else None
        killed = proc.returncode == -9
        out = {"delay_s": round(delay, 3), "killed": killed,
               "final_dir_after_kill": H.artifact_dir(store, aid).is_dir() and killed}
        rerun = H.tselect(*args, store=store, check=False, timeout=900)
        return S._finish_outcome(out, store, ref, aid, at_kill, rerun)

    def _interrupt_models(self, cat: dict, kdir: Path) -> None:
        m = self.model
        d = self.work / "rds"
        inp = {"pool": H.write_jsonl(_mk(d) / "pool.jsonl", H.pool_rows(2100)),
               "query": H.write_jsonl(d / "query.jsonl", H.query_rows(4))}
        args = ["featurize", "--rep", "rds", "--pool", inp["pool"], "--query", inp["query"], "--model", m]
        aid = H.last_line(H.tselect(*args, store=d / "ref"))
        for k in range(3):
            o = self._timed(args, d / "ref", aid, kdir / f"rds-{k}", lambda part: S.chunks_done(part, "query", 1), 3.0,
                            extra_env={"TSELECT_FAULT_SLOW": "0.15"})
            _tally(cat, f"featurize rds, SIGKILL {o['delay_s']}s after the query chunk", o["ok"],
                   o["known_defects"] if not S.unexplained(o) else None, _brief(o), kill=o)
        d = self.work / "less"
        inp = {"pool": H.write_jsonl(_mk(d) / "pool.jsonl", H.pool_rows(150)),
               "query": H.write_jsonl(d / "query.jsonl", H.query_rows(4))}
        args = ["featurize", "--rep", "less", "--pool", inp["pool"], "--query", inp["query"], "--model", m,
                "--param", "dim=256"]
        aid = H.last_line(H.tselect(*args, store=d / "ref"))
        warm = _mk(d / "seed" / "warmup")
        for w in (d / "ref" / "warmup").iterdir():
            if w.is_dir():
                shutil.copytree(w, warm / w.name, dirs_exist_ok=True)
        o = self._timed(args, d / "ref", aid, kdir / "less-warmup", lambda part: any((part.parent.parent / "warmup").glob("*.part")), 2.0)
        _tally(cat, f"featurize less, SIGKILL during the warmup (+{o['delay_s']}s)", o["ok"],
               o["known_defects"] if not S.unexplained(o) else None, _brief(o), kill=o)
        for k in range(2):
            o = self._timed(args, d / "ref", aid, kdir / f"less-{k}", lambda part: S.chunks_done(part, "pool", 1), 2.0,
                            seed_store=d / "seed", extra_env={"TSELECT_FAULT_SLOW": "0.1"})
            _tally(cat, f"featurize less, SIGKILL {o['delay_s']}s after checkpoint 1", o["ok"],
                   o["known_defects"] if not S.unexplained(o) else None, _brief(o), kill=o)
        chain = self.chain(train=True)
        ft = chain["finetune"]

        def fresh(name: str) -> Path:
            st = kdir / name
            shutil.copytree(chain["ref"], st)
            shutil.rmtree(H.artifact_dir(st, ft))
            shutil.rmtree(st / "evaluate", ignore_errors=True)
            return st

        for k in range(3):
            o = self._timed(chain["ft_args"], chain["ref"], ft, fresh(f"ft-{k}"), lambda part: part.is_dir(), 4.0,
                            stage="finetune")
            _tally(cat, f"finetune, SIGKILL {o['delay_s']}s into training", o["ok"],
                   o["known_defects"] if not S.unexplained(o) else None, _brief(o), kill=o)
        for step in sorted(self.rng.sample(range(1, 17), 4)):  # 16 micro-batches: 32 rows / 4, 2 epochs
            st = fresh(f"ft-step-{step}")
            killed = H.tselect(*chain["ft_args"], store=st, faults=True, check=False,
                               extra_env={"TSELECT_FAULT_KILL_STEP": str(step)})
            out = {"step": step, "killed": killed.returncode == -9,
                   "final_dir_after_kill": H.artifact_dir(st, ft).is_dir()}
            o = S._finish_outcome(out, st, chain["ref"], ft, None, H.tselect(*chain["ft_args"], store=st, check=False))
            _tally(cat, f"finetune, kill at training micro-batch {step}", o["ok"],
                   o["known_defects"] if not S.unexplained(o) else None, _brief(o), kill=o)
        log = self.work / "ft-events.txt"
        S.count_events(chain["ft_args"], fresh("ft-count"), log)
        n = len(log.read_text().splitlines())
        for e in range(1, n + 1):
            for w in ("before", "after"):
                o = S.event_kill(chain["ft_args"], chain["ref"], ft, fresh(f"ft-ev-{e}-{w}"), e, w)
                _tally(cat, f"finetune, kill at write {e} ({w} rename)", o["ok"],
                       o["known_defects"] if not S.unexplained(o) else None, _brief(o), kill=o)

    # --- bad input -------------------------------------------------------------------------
    def bad_input(self, cat: dict) -> None:
        from tests.reliability import test_bad_input as B

        cases = B.CASES
        if self.quick:
            cheap = {"jsonl-bad-json", "budget-above-pool"}
            cases = [c for c in cases if c[0] in cheap]
            chain = self.chain(train=False)
            ctx = B.prepare(self.work / "bad", {**chain, "finetune": None}, None)
        else:
            ctx = B.prepare(self.work / "bad", self.chain(train=True), self.model)
        saved = B.CASES[:]
        B.CASES[:] = cases
        try:
            outcomes = B.run_all(ctx, self.work / "bad-cases")
        finally:
            B.CASES[:] = saved
        for name, o in outcomes.items():
            known = [B.XFAIL[name]] if name in B.XFAIL and not o["ok"] else None
            _tally(cat, name, o["ok"], known, None if o["ok"] else {k: o[k] for k in ("exit", "stderr", "new_parts",
                                                                                       "missing")})
            if o["new_parts"]:
                cat.setdefault("leaves_part", []).append(name)

    # --- corruption ------------------------------------------------------------------------
    def corruption(self, cat: dict) -> None:
        from tests.reliability.test_corruption import CORRUPT

        chain = self.chain(train=not self.quick)
        ids = {"featurize": chain["features"], "select": chain["selection"]}
        targets = [("select", "indices.json"), ("featurize", "features.zarr/0/pool/c/0/0")]
        if not self.quick:
            ids.update(finetune=chain["finetune"], evaluate=chain["evaluate"])
            targets += [("featurize", "features.zarr/0/pool_done/c/0"), ("featurize", "features.zarr/0/pool/zarr.json"),
                        ("featurize", "features.zarr/zarr.json"), ("featurize", "manifest.json"),
                        ("finetune", "adapter/adapter_model.safetensors"), ("finetune", "adapter/adapter_config.json"),
                        ("finetune", "train_curve.json"), ("evaluate", "metrics.json"), ("select", "manifest.json")]
        hows = ["truncate"] if self.quick else ["flip", "truncate"]
        for stage, rel in targets:
            for how in hows:
                st = self.work / "corrupt" / f"{stage}-{rel.replace('/', '_')}-{how}"
                shutil.rmtree(st, ignore_errors=True)
                shutil.copytree(chain["ref"], st)
                aid = ids[stage]
                CORRUPT[how](H.artifact_dir(st, aid) / rel)
                proc = H.tselect("verify", aid, store=st, check=False)
                last = (proc.stderr.strip().splitlines() or [""])[-1]
                ok = proc.returncode == 2 and aid in last and last.startswith("error: ")
                known = ["manifest-not-self-verified"] if not ok and rel == "manifest.json" and proc.returncode == 0 \
                    else None
                _tally(cat, f"verify finds {how} {stage}/{rel}", ok, known, None if ok else proc.stderr[-800:])
                for name, args, verified in self._readers(chain, stage, rel, st):
                    proc = H.tselect(*args, store=st, check=False, timeout=600)
                    lines = proc.stderr.strip().splitlines()
                    ok = proc.returncode == 2 and len(lines) == 1 and aid in lines[0]
                    known = None if (ok or verified) else ["unverified-read: " + UNVERIFIED.get(stage, stage)]
                    _tally(cat, f"{name} refuses {how} {stage}/{rel}", ok, known,
                           None if ok else {"exit": proc.returncode, "stderr": proc.stderr[-600:]})

    def _readers(self, chain: dict, stage: str, rel: str, st: Path):
        out = []
        if stage == "featurize" and rel != "manifest.json":
            out.append(("select", ["select", "--features", chain["features"], "--selector", "topk", "--budget", "5"],
                        False))
        if stage == "select" and rel == "indices.json":
            out += [("export", ["export", chain["selection"], "--out", st / "x.jsonl"], True),
                    ("select --exclude", ["select", "--features", chain["features"], "--selector", "strict_random",
                                          "--budget", "4", "--exclude", chain["selection"]], True)]
            if not self.quick:
                out.append(("finetune", ["finetune", "--selection", chain["selection"], "--budget", "4", "--model",
                                         self.model, "--epochs", "1"], True))
        if stage == "finetune" and rel.startswith("adapter/"):
            shutil.rmtree(st / "evaluate", ignore_errors=True)
            out.append(("evaluate", chain["ev_args"], True))
        return out

    # --- fuzz ------------------------------------------------------------------------------
    def fuzz(self, cat: dict) -> None:
        os.environ["TSELECT_FUZZ_EXAMPLES"] = "25" if self.quick else "3000"
        sys.modules.pop("tests.reliability.test_fuzz_jsonl", None)
        from tests.reliability import test_fuzz_jsonl as F

        for name in ("test_arbitrary_bytes", "test_json_rows_of_any_shape", "test_arbitrary_text_lines",
                     "test_written_rows_read_back_identically"):
            before = F.CALLS[0]
            try:
                getattr(F, name)()
                ok, detail = True, None
            except Exception as e:  # noqa: BLE001  (a falsifying example is the result)
                ok, detail = False, f"{type(e).__name__}: {e}"[-1500:]
            cat["cases_tried"] += F.CALLS[0] - before - 1
            cat["cases_passed"] += F.CALLS[0] - before - 1
            _tally(cat, name, ok, None, detail)

    # --- concurrency -----------------------------------------------------------------------
    def concurrency(self, cat: dict) -> None:
        d = self.work / "conc"
        inp = H.make_vectors_inputs(d / "in", 200)
        args = H.vectors_args(inp)
        ref = d / "ref"
        aid = H.last_line(H.tselect(*args, store=ref))
        slow = {"TSELECT_FAULT_SLOW": "0.08"}
        trials = 1 if self.quick else 5
        for k in range(trials):
            st = d / f"same-{k}"
            procs = [H.spawn(*args, store=st, faults=True, extra_env=slow) for _ in range(2)]
            res = [(p.wait(timeout=300), *p.communicate()) for p in procs]
            ids = {(out.strip().splitlines() or [""])[-1] for _, out, _ in res}
            ok = all(rc == 0 for rc, _, _ in res) and ids == {aid} and len(H.final_dirs(st)) == 1 \
                and H.fingerprint(st, aid) == H.fingerprint(ref, aid)
            _tally(cat, f"two identical featurize at once #{k}", ok, None, None if ok else [r[2][-300:] for r in res])
        for k in range(trials):
            st = d / f"lock-{k}"
            part = H.artifact_dir(st, aid).with_suffix(".part")
            holder = H.spawn(*args, store=st, faults=True, extra_env={"TSELECT_FAULT_SLOW": "0.2"})
            H.wait_for(part.is_dir, 60)
            time.sleep(self.rng.uniform(0, 1.5))
            waiter = H.spawn(*args, store=st)
            H.kill9(holder)
            rc = waiter.wait(timeout=300)
            out, err = waiter.communicate()
            same, labels = S.same_as_reference(st, ref, aid) if rc == 0 else \
                (False, ["D1-stuck-part"] if "KeyError" in err and "_done" in err else [])
            ok = rc == 0 and out.strip().splitlines()[-1] == aid and same
            _tally(cat, f"waiter takes over the lock of a killed build #{k}", ok,
                   [x for x in labels if x in S.TOLERATED] or None, None if ok else {"labels": labels,
                                                                                     "stderr": err[-500:]})
        if self.quick:
            return
        chain = self.chain(train=True)
        st = d / "ft-same"
        shutil.copytree(chain["ref"], st)
        shutil.rmtree(H.artifact_dir(st, chain["finetune"]))
        procs = [H.spawn(*chain["ft_args"], store=st) for _ in range(2)]
        res = [(p.wait(timeout=900), *p.communicate()) for p in procs]
        ids = {(out.strip().splitlines() or [""])[-1] for _, out, _ in res}
        ok = ids == {chain["finetune"]} and H.fingerprint(st, chain["finetune"]) == H.fingerprint(chain["ref"], chain["finetune"])
        _tally(cat, "two identical finetune at once", ok, None, None if ok else [r[2][-300:] for r in res])

    # --- determinism -----------------------------------------------------------------------
    def determinism(self, cat: dict) -> None:
        from tselect.select.registry import SELECTORS

        chain = self.chain(train=not self.quick)
        inp = chain["inputs"]
        names = ["topk"] if self.quick else list(SELECTORS)
        sel = [["select", "--features", "{0}", "--selector", n, "--budget", "20", "--seed", "3"]
               + (["--scores", "{1}"] if "scores" in SELECTORS[n].needs else [])
               + (["--exclude", "{2}"] if "exclude" in SELECTORS[n].needs else []) for n in names]
        cmds = [H.vectors_args(inp), ["select", "--features", "{0}", "--selector", "random", "--budget", "5"],
                ["select", "--features", "{0}", "--selector", "round_robin", "--budget", "10"], *sel]
        if not self.quick:
            cmds[1] = ["score", "--strategy", "length", "--pool", inp["pool"], "--model", self.model]
        runs = []
        for k in range(2):
            st = self.work / "det" / f"run{k}"
            shutil.rmtree(st.parent / f"cmds{k}", ignore_errors=True)
            runs.append((st, H.tselect_many(cmds, st, st.parent / f"cmds{k}")))
        (a, ia), (b, ib) = runs
        for name, x, y in zip(names, ia[3:], ib[3:]):
            ok = x == y and (H.artifact_dir(a, x) / "indices.json").read_bytes() == \
                (H.artifact_dir(b, y) / "indices.json").read_bytes()
            _tally(cat, f"select {name} twice", ok)
        if self.quick:
            return
        m = self.model
        models = {"rds": ["featurize", "--rep", "rds", "--pool", inp["pool"], "--query", inp["query"], "--model", m],
                  "less": ["featurize", "--rep", "less", "--pool", inp["pool"], "--query", inp["query"], "--model", m,
                           "--param", "dim=256"]}
        for name, args in models.items():
            st = [self.work / "det" / f"{name}{k}" for k in range(2)]
            ids = [H.last_line(H.tselect(*args, store=s)) for s in st]
            ok = ids[0] == ids[1] and H.fingerprint(st[0], ids[0]) == H.fingerprint(st[1], ids[1])
            _tally(cat, f"featurize {name} twice", ok)
        warm = [next(p for p in (self.work / "det" / f"less{k}" / "warmup").iterdir() if p.is_dir()) for k in range(2)]
        a, b = (H.fingerprint(w.parent.parent, w.name)["files"] for w in warm)
        differ = sorted(rel for rel in set(a) | set(b) if a.get(rel) != b.get(rel))
        known = ["warmup-adapter-config-order"] if differ and all(r.endswith("adapter_config.json") for r in differ) \
            else None
        _tally(cat, "warmup (LESS) twice", not differ, known, differ or None)
        st = self.work / "det" / "chain2"
        ft_args = [x if x != chain["selection"] else "{1}" for x in chain["ft_args"]]
        ev_args = [x if x != chain["finetune"] else "{2}" for x in chain["ev_args"]]
        ids = H.tselect_many([H.vectors_args(inp), ["select", "--features", "{0}", "--selector", "round_robin"],
                              ft_args, ev_args], st, st.parent / "chain2-cmds")
        for name, aid in zip(("finetune", "evaluate"), ids[2:]):
            ok = H.fingerprint(st, aid) == H.fingerprint(chain["ref"], aid)
            _tally(cat, f"{name} twice", ok)

    # --- issue-13 classes --------------------------------------------------------------------
    def classes(self, cat: dict) -> None:
        run_classes(self.work, self.quick, cat)

    # --- disk ------------------------------------------------------------------------------
    def disk(self, cat: dict) -> None:
        import subprocess

        d = _mk(self.work / "disk")
        inp = H.make_vectors_inputs(d / "in", 3000, dim=256)
        args = H.vectors_args(inp)
        fs = d / "fs"
        fs.mkdir(exist_ok=True)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(fs)], capture_output=True).returncode:
            cat["skipped"] = "cannot mount a tmpfs"
            return
        try:
            proc = H.tselect(*args, store=fs / "store", check=False)
            lines = proc.stderr.strip().splitlines()
            ok = proc.returncode == 2 and len(lines) == 1 and "free" in lines[0] and not H.part_dirs(fs / "store")
            _tally(cat, "featurize refuses early on a 1 MB store", ok, None, None if ok else proc.stderr[-500:])
        finally:
            subprocess.run(["umount", "-l", str(fs)], capture_output=True)


# Issue-13 classes: each is a test module of tests/reliability, run here through pytest and
# tallied per class (one case per test). --quick runs the cheap ones (no model, no slow marker).
CLASSES = {
    "silent_wrong_results": "test_silent_results.py",  # finetune schedule, missing chunks, dtype casts, edited manifests
    "store_escapes": "test_store_escapes.py",  # forged ids, refs, planted links, file names
    "sigint": "test_sigint.py",  # a real SIGINT to featurize, select, ls, verify, finetune, evaluate, run
    "recovery": "test_recovery.py",  # disk-full rerun, lost manifests, rm vs readers, vanished inputs
}
QUICK_CLASSES = "not slow and (exact or missing or underflow or non_finite or forged or planted or manifest " \
                "or counts or refuses or featurize_select)"


def run_classes(work: Path, quick: bool, cat: dict) -> None:
    import subprocess
    import xml.etree.ElementTree as ET

    xml = work / "classes.xml"
    files = [str(REPO / "tests" / "reliability" / f) for f in CLASSES.values()]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", "--basetemp",
           str(work / "classes-tmp"), *files, "-m", "not slow" if quick else "slow or not slow"]
    if quick:
        cmd += ["-k", QUICK_CLASSES.removeprefix("not slow and ")]
    subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=H.env(), timeout=3600)
    by_file = {v: k for k, v in CLASSES.items()}
    cat["by_class"] = {k: {"cases_tried": 0, "cases_passed": 0} for k in CLASSES}
    for case in ET.parse(xml).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            continue
        klass = by_file.get(case.get("classname", "").rsplit(".", 1)[-1] + ".py", "other")
        failed = case.find("failure") is not None or case.find("error") is not None
        entry = cat["by_class"].setdefault(klass, {"cases_tried": 0, "cases_passed": 0})
        entry["cases_tried"] += 1
        entry["cases_passed"] += int(not failed)
        _tally(cat, f"{klass}: {case.get('name')}", not failed, None,
               None if not failed else (case.find("failure") if case.find("failure") is not None
                                        else case.find("error")).get("message", "")[-1500:])


UNVERIFIED = {"featurize": "zarr feature chunks are read without checksum verification (select/score/distance)"}


def _mk(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d


def _brief(o: dict) -> dict:
    return {k: o.get(k) for k in ("event", "when", "delay_s", "error", "bytes_lost", "orphans", "redone_done_chunks",
                                  "lost_chunks", "verify", "known_defects") if o.get(k) not in (None, [], {})}


CATEGORIES = ("interrupt", "corruption", "bad_input", "fuzz", "concurrency", "determinism", "disk", "classes")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reliability.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few cases per category, no model loads")
    ap.add_argument("--out", default=str(REPO / "reliability" / "results.json"), help="results file")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one, removed)")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--only", nargs="*", choices=CATEGORIES, help="run only these categories")
    a = ap.parse_args(argv)
    for k, v in H.BASE_ENV.items():
        os.environ.setdefault(k, v)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="tselect-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    h = Harness(work.resolve(), a.quick, a.seed)
    started = time.time()
    results: dict = {"mode": "quick" if a.quick else "full", "seed": a.seed, "categories": {}}
    try:
        for name in a.only or CATEGORIES:
            cat = _category()
            t0 = time.time()
            try:
                getattr(h, name)(cat)
            except Exception:  # noqa: BLE001  (a crash of the harness itself is reported, not hidden)
                cat["failures"].append({"case": "harness", "detail": traceback.format_exc()[-3000:]})
            cat["seconds"] = round(time.time() - t0, 1)
            results["categories"][name] = cat
            print(f"{name:12s} tried {cat['cases_tried']:5d}  passed {cat['cases_passed']:5d}  kills {cat['kills']:3d}"
                  f"  survived {cat['kills_survived']:3d}  bytes lost {cat['bytes_lost']}  unexplained "
                  f"{len(cat['failures'])}  ({cat['seconds']}s)", file=sys.stderr)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    cats = results["categories"].values()
    results["totals"] = {k: sum(c[k] for c in cats) for k in ("cases_tried", "cases_passed", "kills", "kills_survived",
                                                              "kills_data_intact", "kills_not_resumed", "bytes_lost")}
    results["totals"]["unexplained_failures"] = sum(len(c["failures"]) for c in cats)
    results["known_defects"] = S.KNOWN
    results["duration_s"] = round(time.time() - started, 1)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 1 if results["totals"]["unexplained_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
