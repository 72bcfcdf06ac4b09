"""Tests of kelly.audio.search that are awkward inside the notebook: every error class, save/load integrity,
each index kind, the commands on a folder of synthetic WAVs, and the search benchmark at its tiny size."""
import contextlib, io, json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from kelly.core import KellyError, InputError
from kelly.audio.search import (KINDS, TrackIndex, DimensionError, NonFiniteError, UnknownTrackError, DuplicateTrackError,
                                IndexSizeError, IntegrityError, MetricLearner, recommend_fused, index_main, recommend_main,
                                bench_search, search_bench_large, SyntheticVectors)


def unit(n, d, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def ids(n, prefix='t'): return [f'{prefix}{i:03d}' for i in range(n)]


@pytest.fixture
def flat():
    return TrackIndex(12).add(ids(30), unit(30, 12))


def test_dimension_error(flat):
    with pytest.raises(DimensionError, match='mismatched dimension'): flat.add(['x'], unit(1, 11))
    with pytest.raises(DimensionError): flat.search(unit(2, 13), 3)
    with pytest.raises(DimensionError): flat.search(np.zeros((2, 3, 12)), 3)


def test_non_finite_error(flat):
    bad = unit(3, 12); bad[1, 4] = np.inf
    with pytest.raises(NonFiniteError, match=r'vectors\[1\]'): flat.add(['a', 'b', 'c'], bad)
    bad[1, 4] = np.nan
    with pytest.raises(NonFiniteError): flat.search(bad, 2)
    assert len(flat) == 30  # nothing was added


def test_unknown_ids(flat):
    with pytest.raises(UnknownTrackError) as e: flat.recommend('nope', 3)
    assert isinstance(e.value, LookupError) and isinstance(e.value, KellyError)
    with pytest.raises(UnknownTrackError): flat.remove(['t001', 'nope'])
    assert 't001' in flat  # a failed remove removes nothing
    with pytest.raises(UnknownTrackError): flat.vector('nope')


def test_duplicate_ids(flat):
    with pytest.raises(DuplicateTrackError, match='already in the index'): flat.add(['t005'], unit(1, 12))
    with pytest.raises(DuplicateTrackError, match='duplicate'): flat.add(['a', 'a'], unit(2, 12))
    flat.remove(['t005']); flat.add(['t005'], unit(1, 12, seed=3))  # a removed id may come back
    assert len(flat) == 30


def test_k_larger_than_index(flat):
    with pytest.raises(IndexSizeError, match='at most 30'): flat.search(unit(1, 12), 31)
    with pytest.raises(IndexSizeError, match='at most 29'): flat.recommend('t000', 30)
    with pytest.raises(InputError): flat.search(unit(1, 12), 0)
    assert len(flat.recommend('t000', 29)) == 29
    with pytest.raises(IndexSizeError): TrackIndex(12).search(unit(1, 12), 1)


def test_search_is_exact_and_batched(flat):
    X = unit(30, 12); Q = unit(7, 12, seed=9)
    got, scores = flat.search(Q, 5)
    S = Q @ X.T
    order = np.argsort(-S, 1)[:, :5]
    assert got.shape == scores.shape == (7, 5) and scores.dtype == np.float32
    assert got.tolist() == [[f't{j:03d}' for j in row] for row in order]
    np.testing.assert_allclose(scores, np.take_along_axis(S, order, 1), atol=1e-5)
    _, every = flat.search(Q, 30)  # the whole ranking: negative cosines come back as they are, never clamped
    np.testing.assert_allclose(every, -np.sort(-S, 1), atol=1e-5)
    assert (every < 0).any()


@pytest.mark.parametrize('rerank', [0, 50])
@pytest.mark.parametrize('kind', list(KINDS))
def test_every_kind(kind, rerank, tmp_path):
    C = unit(10, 48, seed=1)
    X = np.repeat(C, 40, 0) + 0.05 * unit(400, 48, seed=2); X /= np.linalg.norm(X, axis=1, keepdims=True)
    names = ids(400)
    ix = TrackIndex(48, kind, extractor={'name': 'logmel'}, reduce=24, nbits=4, rerank=rerank).add(names, X)
    rec = ix.recommend('t000', 10)
    assert list(rec.columns) == ['track_id', 'score'] and 't000' not in set(rec.track_id)
    assert set(rec.track_id) <= set(names[1:40])  # the query's own cluster
    assert (np.diff(rec.score.to_numpy()) <= 1e-6).all()
    ix.remove(names[1:5])
    assert not set(names[1:5]) & set(ix.recommend('t000', 10).track_id)
    ix.save(tmp_path/'ix')
    back = TrackIndex.load(tmp_path/'ix')
    pd.testing.assert_frame_equal(back.recommend('t000', 10), ix.recommend('t000', 10))
    assert back.params == ix.params and len(back) == 396
    assert (back._store is not None) == (rerank > 0)


def test_integrity(tmp_path):
    ix = TrackIndex(12, extractor={'name': 'logmel', 'n_mels': 64}).add(ids(20), unit(20, 12), pd.DataFrame({'mood': ['calm'] * 20}))
    ix.save(tmp_path/'a')
    m = json.loads((tmp_path/'a'/'manifest.json').read_text())
    assert set(m['files']) == {'index.faiss', 'tracks.parquet'} and m['extractor']['n_mels'] == 64
    assert not list((tmp_path/'a').glob('.*.tmp'))  # atomic writes leave no temporaries
    b = tmp_path/'a'/'index.faiss'
    data = bytearray(b.read_bytes()); data[-5] ^= 0xFF; b.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match='checksum mismatch'): TrackIndex.load(tmp_path/'a')
    ix.save(tmp_path/'a')  # saving again repairs it
    assert TrackIndex.load(tmp_path/'a').metadata.loc['t003', 'mood'] == 'calm'
    (tmp_path/'a'/'tracks.parquet').unlink()
    with pytest.raises(IntegrityError, match='file missing'): TrackIndex.load(tmp_path/'a')
    with pytest.raises(KellyError, match='no manifest'): TrackIndex.load(tmp_path/'nowhere')
    (tmp_path/'b').mkdir(); (tmp_path/'b'/'manifest.json').write_text('{"format": "other"}')
    with pytest.raises(IntegrityError, match='not a kelly track index'): TrackIndex.load(tmp_path/'b')


def test_metric_learning_and_fusion():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)
    X = rng.standard_normal((24, 40)).astype(np.float32); X[:, :3] += 2.5 * np.eye(3)[y]
    Z = MetricLearner(dim_out=3, epochs=8).fit_transform(X, y)
    S = Z @ Z.T; np.fill_diagonal(S, -np.inf)
    assert np.mean(y[S.argmax(1)] == y) > 0.8
    X2 = X / np.linalg.norm(X, axis=1, keepdims=True)
    ix = TrackIndex(40).add(ids(24), X2, pd.DataFrame({'group': y.astype(str)}))
    fused = recommend_fused(ix, 't000', 5, {'group': 1.0}, weight=0.9)
    assert (ix.metadata.loc[fused.track_id, 'group'] == '0').all()
    np.testing.assert_allclose(fused.score, 0.1 * fused.audio_score + 0.9 * fused.metadata_score, rtol=1e-6)


def write_wavs(folder):
    folder.mkdir()
    sr = 24_000; t = np.arange(int(2.0 * sr)) / sr
    for name, f0 in [('low_a', 220), ('low_b', 231), ('high_a', 1760), ('high_b', 1800), ('mid', 600)]:
        sf.write(folder/f'{name}.wav', (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr)


def test_commands(tmp_path, capsys):
    write_wavs(tmp_path/'audio')
    assert index_main(['build', str(tmp_path/'audio'), '--out', str(tmp_path/'ix'), '--no-cache', '--kind', 'hnsw', '--set', 'ef_search=16']) == 0
    assert 'indexed 5 tracks' in capsys.readouterr().out
    ix = TrackIndex.load(tmp_path/'ix')
    assert ix.kind == 'hnsw' and ix.params['ef_search'] == 16 and ix.extractor['name'] == 'logmel'
    assert ix.metadata.loc['low_a', 'path'].endswith('low_a.wav')
    assert recommend_main([str(tmp_path/'ix'), 'low_a', '-k', '3']) == 0
    out = capsys.readouterr().out
    rows = [l for l in out.splitlines()[1:] if 'wav' in l]
    assert len(rows) == 3 and not any(l.split()[1] == 'low_a' for l in rows)
    assert rows[0].split()[1] == 'low_b'  # the nearest pitch
    # a file from outside the index is embedded with the index's extractor settings
    assert recommend_main([str(tmp_path/'ix'), str(tmp_path/'audio'/'high_a.wav'), '-k', '2']) == 0
    assert 'high_a' in capsys.readouterr().out.splitlines()[3]
    with pytest.raises(UnknownTrackError): recommend_main([str(tmp_path/'ix'), 'nope'])
    assert index_main([]) == 2
    with pytest.raises(SystemExit): recommend_main(['--help'])


def test_large_run_truth_is_exact():
    r = search_bench_large(2500, 'clusters', kind=('flat', {}), dim=32, nq=8, chunk=600, train=400)
    assert r['recall'] == 1.0 and r['N'] == 2500


def test_bench_tiny():
    recs = bench_search(size='tiny')
    keys = {(r['case'], r['metric']) for r in recs}
    for case, metric in [('flat N=1500 batch=1', 'bandwidth_fraction'), ('best N=1500', 'recall@10'), ('best N=1500', 'speedup_vs_flat'),
                         ('best N=4000', 'recall@10'), ('best N=4000', 'latency_p50'), ('best N=4000', 'memory_gb')]:
        assert (case, metric) in keys, (case, metric)
    assert all(np.isfinite(r['value']) for r in recs)
    by = {(r['case'], r['metric']): r['value'] for r in recs}
    assert by[('flat N=500 lowrank', 'recall@10')] == 1.0 and 0 <= by[('best N=1500', 'recall@10')] <= 1
