"""zarr feature stores: resumable row chunks, layout, and index lists."""

from __future__ import annotations

import numpy as np
import pytest

from tselect import store as S
from tselect.errors import UserError
from tselect.featurize.common import write_unit_rows


def test_row_writer_resumes_only_pending_chunks(tmp_path):
    rows = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    w = S.RowWriter(tmp_path / "g", "pool", 10, 4, "float32", chunk_rows=3)
    assert w.n_chunks == 4 and w.pending() == [0, 1, 2, 3]
    w.write(0, rows[0:3])
    w.write(2, rows[6:9])
    # "Crash", then reopen with a different requested chunking: the on-disk layout wins.
    w2 = S.RowWriter(tmp_path / "g", "pool", 10, 4, "float32", chunk_rows=5)
    assert w2.chunk_rows == 3 and w2.pending() == [1, 3]
    for c in w2.pending():
        a, b = w2.bounds(c)
        w2.write(c, rows[a:b])
    assert w2.complete()
    np.testing.assert_array_equal(np.asarray(w2.array[:]), rows)


def test_row_writer_refuses_a_different_shape(tmp_path):
    S.RowWriter(tmp_path / "g", "pool", 10, 4, "float32")
    with pytest.raises(ValueError, match="expected"):
        S.RowWriter(tmp_path / "g", "pool", 11, 4, "float32")


def test_store_is_uncompressed_checksummed_and_row_chunked(tmp_path):
    w = S.RowWriter(tmp_path / "g", "pool", 5000, 64, "float16")
    assert [type(c).__name__ for c in w.array.compressors] == ["Crc32cCodec"]  # a checksum, no compression
    assert w.array.chunks == (S.chunk_rows_for(64, 2), 64)


def _features(tmp_path, n=40, d=8):
    rows = np.random.default_rng(0).normal(size=(n, d)).astype(np.float16)
    group = tmp_path / "featurize-0123456789abcdef" / S.FEATURES
    for name, count in (("pool", n), ("query", 3)):
        w = S.RowWriter(group / "c0", name, count, d, "float16", chunk_rows=10)
        for c in range(w.n_chunks):
            a, b = w.bounds(c)
            w.write(c, rows[a:b])
    S.set_attrs(group, {"checkpoints": ["c0"], "weights": [1.0]})
    return group.parent, rows


def test_a_flipped_byte_in_a_pool_chunk_is_one_user_error(tmp_path):
    art, rows = _features(tmp_path)
    feats = S.open_features(art)
    np.testing.assert_array_equal(np.asarray(feats.pools[0][:]), rows)
    chunk = art / S.FEATURES / "c0" / "pool" / "c" / "2" / "0"  # rows 20..29
    data = bytearray(chunk.read_bytes())
    data[5] ^= 0x10
    chunk.write_bytes(bytes(data))
    feats = S.open_features(art)
    np.testing.assert_array_equal(np.asarray(feats.pools[0][0:20]), rows[:20])  # other chunks still read
    with pytest.raises(UserError, match=r"featurize-0123456789abcdef is corrupt .*tselect rm featurize-0123456789abcdef"):
        feats.pools[0][15:25]


def test_interrupted_featurize_equals_uninterrupted(tmp_path):
    x = np.random.default_rng(1).normal(size=(2500, 8)).astype(np.float32)
    calls = []

    def rows(a, b, advance):
        calls.append((a, b))
        if len(calls) == 2 and tmp_path.joinpath("crash").exists():
            raise KeyboardInterrupt
        return x[a:b]

    tmp_path.joinpath("crash").touch()
    with pytest.raises(KeyboardInterrupt):
        write_unit_rows(tmp_path / "a", "pool", 2500, 8, "float32", rows, "t")
    tmp_path.joinpath("crash").unlink()
    calls.clear()
    write_unit_rows(tmp_path / "a", "pool", 2500, 8, "float32", rows, "t")
    assert calls == [(1024, 2048), (2048, 2500)]  # the finished first chunk was not recomputed
    write_unit_rows(tmp_path / "b", "pool", 2500, 8, "float32", lambda a, b, adv: x[a:b], "t")
    a = S.open_group(tmp_path / "a")["pool"][:]
    b = S.open_group(tmp_path / "b")["pool"][:]
    assert a.tobytes() == b.tobytes()
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-6)


def test_indices_round_trip(tmp_path):
    S.write_indices(tmp_path / "i.json", np.array([3, 1, 2]), {"scores": [0.5, 0.25, 0.125]})
    assert S.read_indices(tmp_path / "i.json").tolist() == [3, 1, 2]
    assert S.read_json(tmp_path / "i.json")["scores"] == [0.5, 0.25, 0.125]


def test_concurrent_writers_never_lose_done_flags(tmp_path):
    import threading

    w = S.RowWriter(tmp_path / "g", "pool", 64 * 40, 4, "float32", chunk_rows=64)
    rows = np.ones((64, 4), dtype=np.float32)

    def shard(i):
        writer = S.RowWriter(tmp_path / "g", "pool", 64 * 40, 4, "float32", chunk_rows=64)
        for c in range(i, 40, 4):
            writer.write(c, rows)

    threads = [threading.Thread(target=shard, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.pending() == [] and w.complete()
