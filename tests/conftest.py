"""Shared fixtures: a temporary store, toy JSONL data, and a tiny in-code causal LM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TSELECT_PROGRESS", "0")

TOPICS = {
    "science": ["What gas do plants absorb?", "Carbon dioxide.", "What is the boiling point of water at sea level?", "100 degrees Celsius."],
    "sports": ["How many players are on a soccer team?", "Eleven.", "What sport uses a shuttlecock?", "Badminton."],
    "cooking": ["What do you need to bake bread?", "Flour, water, yeast and salt.", "How long do you boil an egg?", "About nine minutes."],
}


def toy_rows(n_per_topic: int = 8) -> list[dict]:
    rows = []
    for k in range(n_per_topic):
        for topic, (q1, a1, q2, a2) in TOPICS.items():
            q, a = (q1, a1) if k % 2 == 0 else (q2, a2)
            rows.append({"messages": [{"role": "user", "content": f"{q} (variant {k})"},
                                      {"role": "assistant", "content": a}], "source_task": topic})
    return rows


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def toy_data(tmp_path: Path) -> tuple[Path, Path]:
    pool = tmp_path / "pool.jsonl"
    query = tmp_path / "query.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in toy_rows()))
    queries = [{"prompt": "Which gas do trees take in from the air?", "completion": "Carbon dioxide."},
               {"prompt": "At what temperature does water boil?", "completion": "100 degrees Celsius."}]
    query.write_text("".join(json.dumps(r) + "\n" for r in queries))
    return pool, query


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
