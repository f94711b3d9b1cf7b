"""Benchmarks: `python -m bench.run` runs every `bench/*_bench.py` module's `main(argv)`.

Never imported by `tselect`. Generated inputs live in `bench/data/` (gitignored); results
(JSON with machine info, plus a markdown table) go to `bench/results/`.
"""
