"""`python -m reliability.run --quick` runs end to end and writes a well-formed results file."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.reliability import helpers as H

FIELDS = {"cases_tried", "cases_passed", "kills", "kills_survived", "kills_data_intact", "bytes_lost",
          "known_defect_hits", "known_failures", "failures"}


def test_quick_harness(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "reliability.run", "--quick", "--out", str(out),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, cwd=H.REPO,
                          env=H.env(), timeout=900)
    results = json.loads(out.read_text())
    assert proc.returncode == 0, (proc.stderr[-3000:], json.dumps(results["totals"]))
    cats = results["categories"]
    assert set(cats) == {"interrupt", "corruption", "bad_input", "fuzz", "concurrency", "determinism", "disk", "classes"}
    assert all(c["cases_tried"] >= 1 for c in cats["classes"]["by_class"].values()), cats["classes"]["by_class"]
    for name, cat in cats.items():
        assert FIELDS <= set(cat), name
        assert cat["failures"] == [], (name, cat["failures"])
        assert cat["cases_passed"] + len(cat["known_failures"]) == cat["cases_tried"], name
    assert cats["interrupt"]["kills"] >= 2 and cats["interrupt"]["bytes_lost"] == 0
    assert cats["interrupt"]["kills_data_intact"] == cats["interrupt"]["kills"]
    assert results["totals"]["unexplained_failures"] == 0
