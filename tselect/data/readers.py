"""Rows from files, directories and hub ids, read through the `datasets` library.

- `save_to_disk` directories: `datasets.load_from_disk` (a `Dataset`, or a `DatasetDict`
  that needs `--split`: splits are never merged silently).
- parquet, CSV and JSON files, and folders of data files (a hub snapshot is one): the
  `datasets` packaged builders through `datasets.load_dataset`, offline.
- hub ids (`org/name[@revision]`): the snapshot in the local HF cache (`tselect.data.hub`),
  then read as a folder of data files.

JSONL stays with `tselect.data.formats`, whose own reader names the line of a bad row.
Every failure of the library (corrupt arrow/parquet, a bad CSV) becomes one `UserError` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tselect.errors import UserError

FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".tsv": "csv"}


def read_rows(spec: str, split: str | None, flag: str = "--pool") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows as dicts in file order, origin facts to record: kind, split, hub commit)."""
    from tselect.data.hub import looks_like_hub_id, resolve_snapshot

    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return _from_disk(path, split, flag)
        return _from_folder(path, split, flag), {"kind": "folder", "split": split}
    if path.is_file():
        return _from_file(path, split, flag), {"kind": path.suffix.lstrip("."), "split": split}
    if looks_like_hub_id(spec):
        snap = resolve_snapshot(spec, "dataset", flag=flag)
        origin = {"kind": "hub", "repo_id": snap.repo_id, "commit": snap.commit, "split": split}
        return _from_folder(snap.path, split, f"{flag} {spec}"), origin
    raise UserError(f"{flag} {spec} does not exist, and is not a hub id (org/name) either; pass a JSONL, "
                    "parquet, CSV or JSON file, a `save_to_disk` directory, a hub id in the local HF cache, or builtin:pool")


def _datasets():
    try:
        import datasets
    except ImportError:  # a declared dependency, but a hand-made venv may lack it
        raise UserError("reading this data needs the `datasets` package: run `pip install datasets`") from None
    datasets.disable_progress_bars()
    # Its errors reach the user as tselect's one `error:` line; its own log lines would add more.
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    return datasets


def _from_disk(path: Path, split: str | None, flag: str):
    ds_lib = _datasets()
    try:
        obj = ds_lib.load_from_disk(str(path))
    except Exception as e:  # corrupt arrow file, bad state.json, ...
        raise UserError(f"{flag} {path}: cannot read this save_to_disk directory ({_first_line(e)}); "
                        "re-save it with `Dataset.save_to_disk` or pass another file") from None
    if isinstance(obj, ds_lib.DatasetDict):
        obj = _pick_split(obj, split, f"{flag} {path}")
        return _to_rows(obj, path, flag), {"kind": "save_to_disk", "split": split}
    if split is not None and obj.split is not None and str(obj.split) != split:
        raise UserError(f"{flag} {path} holds the single split {obj.split!r}, not {split!r}; drop --split or pass {obj.split}")
    return _to_rows(obj, path, flag), {"kind": "save_to_disk", "split": split}


def _pick_split(dd, split: str | None, where: str):
    names = ", ".join(dd)
    if split is None:
        if len(dd) == 1:
            return next(iter(dd.values()))
        raise UserError(f"{where} has splits {names}; pick one with --split (tselect never merges splits)")
    if split not in dd:
        raise UserError(f"{where} has no split {split!r}; its splits are {names}")
    return dd[split]


def _from_file(path: Path, split: str | None, flag: str) -> list[dict[str, Any]]:
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise UserError(f"{flag} {path}: unknown file type {path.suffix or '(none)'}; pass .jsonl, .json, .parquet or "
                        ".csv (or a save_to_disk directory)")
    kwargs = _csv_options(path, flag) if builder == "csv" else {}
    if split not in (None, "train"):
        raise UserError(f"{flag} {path} is one file, a single split; drop --split {split}")
    return _load(builder, {"train": str(path)}, "train", path, flag, **kwargs)


def _csv_options(path: Path, flag: str) -> dict[str, Any]:
    """CSV has no types: every cell is read as text ("42" is an answer, not a number; "" stays "")."""
    import csv

    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh, delimiter=delimiter), None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{flag} {path}: cannot read its header ({_first_line(e)}); save it as UTF-8 CSV") from None
    if not header:
        raise UserError(f"{flag} {path} has no header row; the first line must name the columns")
    ds_lib = _datasets()
    features = ds_lib.Features({name: ds_lib.Value("string") for name in header})
    return {"delimiter": delimiter, "features": features, "keep_default_na": False}


def _from_folder(path: Path, split: str | None, flag: str) -> list[dict[str, Any]]:
    """A folder of data files; `datasets` infers the format and the splits from the file names."""
    if not any(p.is_file() and not p.name.startswith(".") for p in path.rglob("*")):
        raise UserError(f"{flag} {path} is a directory without data files (.arrow, .parquet, .jsonl, .csv); pass a "
                        "`save_to_disk` directory, a folder of data files, or a file")
    ds_lib = _datasets()
    try:
        obj = ds_lib.load_dataset(str(path))
    except Exception as e:
        raise UserError(f"{flag}: cannot read the data files in {path} ({_first_line(e)}); pass a folder of "
                        "parquet/JSON/CSV/arrow files or a save_to_disk directory") from None
    return _to_rows(_pick_split(obj, split, f"{flag} ({path})"), path, flag)


def _load(builder: str, data_files, split: str, path: Path, flag: str, **kwargs) -> list[dict[str, Any]]:
    ds_lib = _datasets()
    try:
        obj = ds_lib.load_dataset(builder, data_files=data_files, split=split, **kwargs)
    except Exception as e:  # ArrowInvalid, DatasetGenerationError, UnicodeDecodeError, ...
        raise UserError(f"{flag} {path}: cannot read it as {builder} ({_first_line(e)}); fix or re-export the file") from None
    return _to_rows(obj, path, flag)


def _to_rows(ds, path: Path, flag: str) -> list[dict[str, Any]]:
    try:
        return ds.to_list()
    except Exception as e:  # a truncated arrow file fails only when its rows are read
        raise UserError(f"{flag} {path}: cannot read its rows ({_first_line(e)}); the file is damaged, re-save it") from None


def write_table(path: Path, rows: list[dict[str, Any]], kind: str) -> None:
    """Rows to a parquet or CSV file (JSON/JSONL are written by formats.write_rows)."""
    ds = _datasets().Dataset.from_list(rows)
    if kind == "parquet":
        ds.to_parquet(str(path))
    else:
        ds.to_csv(str(path), index=False)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__
