"""Tests of kelly.audio.scale: the on-disk IVF-PQ built in parallel shards against a serial build and exact search,
the same shards served by two worker processes against the merged index, sequence similarities, `kelly bench scale`."""
import os

import numpy as np
import pytest

from kelly.core import InputError
from kelly.parallel import dask_client
from kelly.audio import scale as S

CATALOG = dict(n=3_000, dim=64, seed=3)


@pytest.fixture(scope='module')
def serial_build(tmp_path_factory):
    folder = tmp_path_factory.mktemp('serial') / 'ivfpq'
    S.build_ivfpq(folder, CATALOG, nlist=16, m=8, shards=2, scheduler='sync')
    return folder


def test_parallel_shards_and_two_serving_processes_equal_one_index(serial_build, tmp_path):
    Q = S.CatalogVectors(**CATALOG).array(0, 40, stream=1)
    one = S.OnDiskIVFPQ(serial_build, nprobe=4, shortlist=50)
    expect = one.search(Q, 10)
    _, exact = S.exact_topk(Q, one.vectors, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(expect[1], exact)]) >= 0.8   # a real approximate search
    with dask_client('local', workers=2) as client:
        manifest = S.build_ivfpq(tmp_path / 'par', CATALOG, nlist=16, m=8, shards=2, scheduler=client)
        assert manifest['shards'] == 2 and manifest['build_peak_rss_mb'] > 0
        par = S.OnDiskIVFPQ(tmp_path / 'par', nprobe=4, shortlist=50)
        assert np.array_equal(np.asarray(par.vectors), np.asarray(one.vectors))
        got = par.search(Q, 10)
        assert np.array_equal(got[1], expect[1]) and np.array_equal(got[0], expect[0])   # parallel build = serial build
        sharded = S.ShardedIVFPQ(serial_build, client, nprobe=4, shortlist=50)
        assert len(sharded.paths) == 2
        two = sharded.search(Q, 10)
        cand_one, cand_two = one.candidates(Q), sharded.candidates(Q)
    assert len(set(sharded.pids)) == 2 and os.getpid() not in sharded.pids              # two other processes
    assert np.array_equal(cand_two[1], cand_one[1]) and np.array_equal(cand_two[0], cand_one[0])
    assert np.array_equal(two[1], expect[1]) and np.array_equal(two[0], expect[0])      # exactly what one index returns


def test_sequence_similarities_and_copies():
    from kelly.audio.embed import LogMelExtractor, _music
    ex = LogMelExtractor()
    x = _music(10.0, 1)
    mean, seg = S.segment_vectors(ex, x)
    np.testing.assert_allclose(mean, ex.embed(x), atol=1e-6)
    assert S.sequence_similarity(seg, seg, 'max') == pytest.approx(1.0, abs=1e-6)
    other = S.segment_vectors(ex, _music(10.0, 2))[1]
    assert S.sequence_similarity(seg, other, 'max') >= S.sequence_similarity(seg, other, 'attention', tau=0.5)
    slow = S.time_stretch(x, 0.9)
    assert len(slow) == round(len(x) / 0.9)
    assert S.segment_vectors(ex, slow)[0] @ mean > 0.9         # a slower copy keeps its sound
    with pytest.raises(InputError, match='method'):
        S.sequence_similarity(seg, seg, 'rnn')
    with pytest.raises(InputError, match='rate'):
        S.time_stretch(x, 0.1)
    with pytest.raises(InputError):
        S.CatalogVectors(0)
    with pytest.raises(InputError, match='sub-quantisers'):
        S.train_ivfpq(np.zeros((10, 30), np.float32), 4, m=8)


def test_bench_tiny():
    recs = S.bench_scale('tiny')
    by = {(r['case'], r['metric']): r['value'] for r in recs}
    assert by[('extract workers=2', 'identical_to_serial')] == 1.0
    assert by[('extract workers=2', 'speedup')] > 0 and by[('ivfpq N=4000', 'recall@10')] >= 0.9
    extract = {m for c, m in by if c == 'extract workers=2'}
    assert {'speedup', 'speedup_median', 'control_speedup', 'client_cpu_share', 'overhead_per_task'} <= extract
    assert by[('extract workers=2', 'audio')] == 4 * 2.0 / 60                  # the size measured is stated
    assert {'recall@10', 'latency_p50', 'build_seconds', 'peak_memory'} <= {m for c, m in by if c == 'ivfpq N=4000'}
    assert all(set(r) == {'case', 'metric', 'value', 'unit'} for r in recs)


def test_extraction_benchmark_parts(tmp_path):
    with pytest.raises(InputError, match='workers'):
        S.extract_speedup(2, 1.0, workers=1)
    assert S.control_task(7, 1000) == S.control_task(7, 1000) != S.control_task(8, 1000)
    folder = S.tracks_folder(tmp_path / 'tracks', 4, 0.5, distinct=3)
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ['track0000.wav', 'track0001.wav', 'track0002.wav', 'track0003.wav']
    assert files[3].read_bytes() == files[0].read_bytes() != files[1].read_bytes()
