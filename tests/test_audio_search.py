"""Tests of kelly.audio.search that are awkward inside the notebook: every error class, save/load integrity,
each index kind, the commands on a folder of synthetic WAVs, and the search benchmark at its tiny size."""
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from kelly.core import KellyError, InputError
from kelly.audio.search import (KINDS, APPLIES, TrackIndex, DimensionError, NonFiniteError, UnknownTrackError,
                                DuplicateTrackError,
                                IndexSizeError, IntegrityError, MetricLearner, recommend_fused, index_main,
                                recommend_main, bench_search, search_bench_large, write_synthetic_tracks)
from conftest import kelly_cli


def unit(n, d, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def ids(n, prefix='t'): return [f'{prefix}{i:03d}' for i in range(n)]


@pytest.fixture
def flat():
    return TrackIndex(12).add(ids(30), unit(30, 12))


def test_dimension_error(flat):
    with pytest.raises(DimensionError, match='mismatched dimension'):
        flat.add(['x'], unit(1, 11))
    with pytest.raises(DimensionError):
        flat.search(unit(2, 13), 3)
    with pytest.raises(DimensionError):
        flat.search(np.zeros((2, 3, 12)), 3)


def test_non_finite_error(flat):
    bad = unit(3, 12)
    bad[1, 4] = np.inf
    with pytest.raises(NonFiniteError, match=r'vectors\[1\]'):
        flat.add(['a', 'b', 'c'], bad)
    bad[1, 4] = np.nan
    with pytest.raises(NonFiniteError):
        flat.search(bad, 2)
    assert len(flat) == 30  # nothing was added


def test_unknown_ids(flat):
    with pytest.raises(UnknownTrackError) as e:
        flat.recommend('nope', 3)
    assert isinstance(e.value, LookupError) and isinstance(e.value, KellyError)
    with pytest.raises(UnknownTrackError):
        flat.remove(['t001', 'nope'])
    assert 't001' in flat  # a failed remove removes nothing
    with pytest.raises(UnknownTrackError):
        flat.vector('nope')


def test_duplicate_ids(flat):
    with pytest.raises(DuplicateTrackError, match='already in the index'):
        flat.add(['t005'], unit(1, 12))
    with pytest.raises(DuplicateTrackError, match='duplicate'):
        flat.add(['a', 'a'], unit(2, 12))
    flat.remove(['t005'])
    flat.add(['t005'], unit(1, 12, seed=3))  # a removed id may come back
    assert len(flat) == 30


def test_k_larger_than_index(flat):
    with pytest.raises(IndexSizeError, match='at most 30'):
        flat.search(unit(1, 12), 31)
    with pytest.raises(IndexSizeError, match='at most 29'):
        flat.recommend('t000', 30)
    with pytest.raises(InputError):
        flat.search(unit(1, 12), 0)
    assert len(flat.recommend('t000', 29)) == 29
    with pytest.raises(IndexSizeError):
        TrackIndex(12).search(unit(1, 12), 1)


def test_search_is_exact_and_batched(flat):
    X = unit(30, 12)
    Q = unit(7, 12, seed=9)
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
    X = np.repeat(C, 40, 0) + 0.05 * unit(400, 48, seed=2)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    names = ids(400)
    given = {k: v for k, v in dict(reduce=24, nbits=4, rerank=rerank).items() if k in APPLIES[kind]}
    ix = TrackIndex(48, kind, extractor={'name': 'logmel'}, **given).add(names, X)
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
    assert (back._store is not None) == (rerank > 0 and ix.kind != 'flat')


def test_integrity(tmp_path):
    ix = TrackIndex(12, extractor={'name': 'logmel', 'n_mels': 64}).add(ids(20), unit(20, 12),
                                                                        pd.DataFrame({'mood': ['calm'] * 20}))
    ix.save(tmp_path/'a')
    m = json.loads((tmp_path/'a'/'manifest.json').read_text())
    assert set(m['files']) == {'index.faiss', 'tracks.parquet'} and m['extractor']['n_mels'] == 64
    assert not list((tmp_path/'a').glob('.*.tmp'))  # atomic writes leave no temporaries
    b = tmp_path/'a'/'index.faiss'
    data = bytearray(b.read_bytes())
    data[-5] ^= 0xFF
    b.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match='checksum mismatch'):
        TrackIndex.load(tmp_path/'a')
    ix.save(tmp_path/'a')  # saving again repairs it
    assert TrackIndex.load(tmp_path/'a').metadata.loc['t003', 'mood'] == 'calm'
    (tmp_path/'a'/'tracks.parquet').unlink()
    with pytest.raises(IntegrityError, match='file missing'):
        TrackIndex.load(tmp_path/'a')
    with pytest.raises(KellyError, match='no such folder'):
        TrackIndex.load(tmp_path/'nowhere')
    (tmp_path/'empty').mkdir()
    with pytest.raises(KellyError, match='no manifest'):
        TrackIndex.load(tmp_path/'empty')
    (tmp_path/'b').mkdir()
    (tmp_path/'b'/'manifest.json').write_text('{"format": "other"}')
    with pytest.raises(IntegrityError, match='not a kelly track index'):
        TrackIndex.load(tmp_path/'b')


def test_metric_learning_and_fusion():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)
    X = rng.standard_normal((24, 40)).astype(np.float32)
    X[:, :3] += 2.5 * np.eye(3)[y]
    Z = MetricLearner(dim_out=3, epochs=8).fit_transform(X, y)
    S = Z @ Z.T
    np.fill_diagonal(S, -np.inf)
    assert np.mean(y[S.argmax(1)] == y) > 0.8
    X2 = X / np.linalg.norm(X, axis=1, keepdims=True)
    ix = TrackIndex(40).add(ids(24), X2, pd.DataFrame({'group': y.astype(str)}))
    fused = recommend_fused(ix, 't000', 5, {'group': 1.0}, weight=0.9)
    assert (ix.metadata.loc[fused.track_id, 'group'] == '0').all()
    np.testing.assert_allclose(fused.score, 0.1 * fused.audio_score + 0.9 * fused.metadata_score, rtol=1e-6)


def write_wavs(folder):
    folder.mkdir()
    sr = 24_000
    t = np.arange(int(2.0 * sr)) / sr
    for name, f0 in [('low_a', 220), ('low_b', 231), ('high_a', 1760), ('high_b', 1800), ('mid', 600)]:
        sf.write(folder/f'{name}.wav', (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr)


def test_commands(tmp_path, capsys):
    write_wavs(tmp_path/'audio')
    assert index_main(['build', str(tmp_path/'audio'), '--out', str(tmp_path/'ix'), '--no-cache', '--kind', 'hnsw',
                       '--set', 'ef_search=16', '--scheduler', 'sync']) == 0
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
    out = capsys.readouterr().out
    # the indexed file is not its own neighbour
    assert 'left out: high_a' in out and out.splitlines()[3].split()[1] == 'high_b'
    sf.write(tmp_path/'outside.wav', sf.read(tmp_path/'audio'/'high_a.wav')[0] * 0.5, 24_000)  # another file: embedded
    assert recommend_main([str(tmp_path/'ix'), str(tmp_path/'outside.wav'), '-k', '2']) == 0
    assert capsys.readouterr().out.splitlines()[3].split()[1:3] == ['high_a', '1.0000']
    with pytest.raises(UnknownTrackError):
        recommend_main([str(tmp_path/'ix'), 'nope'])
    with pytest.raises(SystemExit):
        index_main([])
    with pytest.raises(SystemExit):
        recommend_main(['--help'])


def test_large_run_truth_is_exact():
    r = search_bench_large(2500, 'clusters', kind=('flat', {}), dim=32, nq=8, chunk=600, train=400)
    assert r['recall'] == 1.0 and r['N'] == 2500


def test_bench_tiny():
    recs = bench_search(size='tiny')
    by = {(r['case'], r['metric']): r['value'] for r in recs}
    for regime, n in [('clusters', 5000), ('lowrank', 5000), ('tracks', 5000)]:
        wanted = [('', 'recall@10'), ('', 'speedup_vs_flat'), ('', 'memory_gb'), (' batch=1', 'latency_p50')]
        for suffix, metric in wanted:
            assert (f'auto N={n} {regime}{suffix}', metric) in by, (regime, metric)
        assert by[(f'flat N={n} {regime}', 'recall@10')] == 1.0
        assert by[(f'flat N={n} {regime}', 'speedup_vs_flat')] == 1.0
        assert by[(f'auto N={n} {regime}', 'recall@10')] >= 0.9, (regime, by[(f'auto N={n} {regime}', 'recall@10')])
        assert by[(f'flat N={n} {regime} batch=1', 'bandwidth_fraction')] > 0  # tiny: a scan from cache, no upper bound
    assert not any(case.startswith('best ') for case, _ in by)  # no "best" across regimes
    for case, metric in by:
        if metric == 'latency_p50' and (case, 'latency_p99') in by:
            assert by[(case, 'latency_p99')] >= by[(case, metric)] > 0, case
    dim = 256  # the flat index holds exactly its vectors and their ids
    assert by[('flat N=5000 clusters', 'memory_gb')] == pytest.approx(5000 * (dim * 4 + 8) / 1e9)
    assert all(np.isfinite(r['value']) for r in recs)
    assert 0 <= by[('pca-hnsw N=4000 lowrank', 'recall@10')] <= 1


def clustered(n_clusters, per, dim, noise, seed):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    X = np.repeat(C, per, 0) + noise * rng.standard_normal((n_clusters * per, dim)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True), C


def test_auto_chooses_from_the_data_and_records_why(tmp_path):
    X, C = clustered(80, 40, 512, 0.7, 0)
    ix = TrackIndex(512, 'auto').add(ids(len(X)), X)
    assert ix.kind == 'pca-ivf' and ix.choice['calibration']['reached']
    assert 'calibrated on 200 of its tracks' in ix.choice['reason']
    Q = np.repeat(C[:30], 1, 0) + 0.7 * np.random.default_rng(5).standard_normal((30, 512)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    truth = np.argsort(-(Q @ X.T), 1)[:, :10]
    found = np.vectorize(lambda t: int(t[1:]))(ix.search(Q, 10)[0])
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]) >= 0.95
    ix.save(tmp_path/'ix')
    back = TrackIndex.load(tmp_path/'ix')
    assert back.choice == json.loads(json.dumps(ix.choice)) and back.kind == 'pca-ivf'
    pd.testing.assert_frame_equal(back.recommend('t000', 5), ix.recommend('t000', 5))
    info = index_main(['info', str(tmp_path/'ix')])
    assert info == 0
    small = TrackIndex(512, 'auto').add(ids(300), X[:300])  # an exact scan of 300 × 512 is cheap: flat
    assert small.kind == 'flat' and small.choice['reason'].startswith('an exact scan of 300 × 512 floats')
    fixed = TrackIndex(512, 'auto', nprobe=3, rerank=40).add(ids(len(X)), X)  # given settings are kept, the rest chosen
    assert (fixed.kind, fixed.params['nprobe'], fixed.params['rerank']) == ('pca-ivf', 3, 40)
    assert TrackIndex(512, 'ivf').add(ids(len(X)), X).choice == {}  # --kind overrides: nothing chosen


def test_info_prints_the_choice(tmp_path, capsys):
    X, _ = clustered(40, 50, 512, 0.7, 1)
    TrackIndex(512, 'auto').add(ids(len(X)), X).save(tmp_path/'ix')
    assert index_main(['info', str(tmp_path/'ix')]) == 0
    out = capsys.readouterr().out
    assert 'kind       pca-ivf' in out and 'chosen     2000 × 512 floats: PCA to' in out and 'nprobe=' in out


def test_big_exact_scan_on_every_core_matches_numpy(monkeypatch):
    import kelly.audio.search as search
    monkeypatch.setattr(search, 'SMALL_WORK', 1000)  # take the parallel BLAS scan at a test's size
    X, Q = unit(3000, 64), unit(5, 64, seed=4)
    ix = TrackIndex(64).add(ids(3000), X)
    ix.remove(['t007'])
    got, scores = ix.search(Q, 8)
    S = Q @ X.T
    S[:, 7] = -np.inf
    order = np.argsort(-S, 1)[:, :8]
    assert got.tolist() == [[f't{j:03d}' for j in row] for row in order]
    np.testing.assert_allclose(scores, np.take_along_axis(S, order, 1), atol=1e-5)


def test_a_faiss_error_on_remove_is_a_kelly_error(monkeypatch, flat):
    import faiss
    def refuse(self, *args):
        raise RuntimeError('Error in remove_ids: not implemented for this type of index')
    monkeypatch.setattr(faiss.IndexIDMap2, 'remove_ids', refuse)
    with pytest.raises(KellyError, match='FAISS could not remove them'):
        flat.remove(['t001'])
    assert 't001' in flat


def test_triplets_are_valid_and_uniform_without_listing_them():
    from scipy.stats import chisquare
    from kelly.audio.search import make_triplets, _all_triplets
    y = np.array(list('aaabbbcc'))
    every = _all_triplets(y)
    assert len(every) == sum(c * (c - 1) * (8 - c) for c in (3, 3, 2)) == 72
    assert make_triplets(y, 100).tolist() == every.tolist()  # few: all of them, in order
    counts = {tuple(t): 0 for t in every.tolist()}
    for seed in range(400):  # 10 of 72: the drawing path (more than 4 × 10 valid triplets)
        T = make_triplets(y, 10, seed=seed)
        assert len(np.unique(T, axis=0)) == 10
        for t in T.tolist():
            counts[tuple(t)] += 1  # a KeyError here is an invalid triplet
    assert chisquare(list(counts.values())).pvalue > 0.001  # uniform over the valid triplets
    import tracemalloc
    labels = np.random.default_rng(0).integers(0, 8, 5000)  # 5000 labelled tracks: ~2.7e10 triplets, never listed
    tracemalloc.start()
    T = make_triplets(labels, 20_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6 and T.shape == (20_000, 3)
    assert (labels[T[:, 0]] == labels[T[:, 1]]).all() and (labels[T[:, 0]] != labels[T[:, 2]]).all()
    assert (T[:, 0] != T[:, 1]).all()


# --- the commands as a user runs them (issue 18): bad input, real folders, info, self-exclusion
# ------------------------

import subprocess, sys
from pathlib import Path
from hypothesis import given, settings as hsettings, strategies as st
from kelly.audio.search import SETTINGS, check_params
from kelly.audio.signal import AUDIO_SUFFIXES

FORMATS = {'.wav': ('WAV', 'PCM_16'), '.flac': ('FLAC', 'PCM_16'), '.ogg': ('OGG', 'VORBIS'), '.opus': ('OGG', 'OPUS'),
           '.mp3': ('MP3', 'MPEG_LAYER_III'), '.aiff': ('AIFF', 'PCM_16'), '.aif': ('AIFF', 'PCM_16')}


def tone(f0, seconds=1.5, sr=24_000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def refused(res, *expected):
    ("A refusal as the CLI contract says: exit 2, nothing on stdout, one line on stderr naming the problem, no "
     "traceback.")
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert 'Traceback' not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    for e in expected:
        assert e in res.stderr, (e, res.stderr)


@pytest.fixture(scope='module')
def music(tmp_path_factory):
    "A folder with one track per format (suffixes in upper and lower case), two bad files and a picture, and its index."
    root = tmp_path_factory.mktemp('music')
    audio = root/'audio'
    (audio/'sub').mkdir(parents=True)
    for i, (suffix, (fmt, subtype)) in enumerate(FORMATS.items()):
        name = f'{suffix[1:]}_track{suffix.upper() if i % 2 else suffix}'
        sf.write(audio/('sub' if i % 3 == 0 else '')/name, tone(200 * 1.25 ** i), 24_000, format=fmt, subtype=subtype)
    (audio/'broken.wav').write_bytes(b'RIFF' + bytes(40))
    sf.write(audio/'short.flac', tone(300, 0.1), 24_000)
    (audio/'cover.jpg').write_bytes(b'\xff\xd8 not audio')
    res = kelly_cli('index', 'build', str(audio), '--out', str(root/'ix'), '--no-cache', '--scheduler', 'sync')
    return root, audio, res


def test_formats_in_any_case_are_indexed_and_bad_files_listed(music):
    root, audio, res = music
    assert res.returncode == 0, res.stderr
    assert set(FORMATS) == set(AUDIO_SUFFIXES)
    assert res.stdout.startswith(f'indexed {len(FORMATS)} tracks (384-d logmel vectors, kind '
                                 f'flat)') and 'tracks/s)' in res.stdout
    skipped = 'skipped 2 audio files (1 audio too short, 1 not audio, or corrupt; by suffix: 1 .flac, 1 .wav)'
    assert skipped in res.stderr
    assert 'broken.wav' in res.stderr and 'short.flac' in res.stderr
    assert 'left out 1 file' in res.stderr and '1 .jpg' in res.stderr
    ix = TrackIndex.load(root/'ix')
    assert sorted(Path(p).suffix.lower() for p in ix.metadata.path) == sorted(FORMATS)
    strict = kelly_cli('index', 'build', str(audio), '--out', str(root/'strict'), '--no-cache', '--strict',
                       '--scheduler', 'sync')
    refused(strict, 'broken.wav')
    assert not (root/'strict').exists()


def test_an_mp3_only_folder_and_a_folder_of_bad_files(tmp_path):
    (tmp_path/'mp3').mkdir()
    for i in range(2):
        sf.write(tmp_path/'mp3'/f'song{i}.MP3', tone(300 + 200 * i), 24_000, format='MP3')
    res = kelly_cli('index', 'build', str(tmp_path/'mp3'), '--out', str(tmp_path/'ix'), '--no-cache', '--scheduler',
                    'sync')
    assert res.returncode == 0 and res.stdout.startswith('indexed 2 tracks'), res.stderr
    (tmp_path/'bad').mkdir()
    (tmp_path/'bad'/'a.ogg').write_bytes(b'OggS')
    refused(kelly_cli('index', 'build', str(tmp_path/'bad'), '--out', str(tmp_path/'ix2'), '--no-cache', '--scheduler',
                      'sync'),
            'no audio file could be indexed')
    (tmp_path/'none').mkdir()
    (tmp_path/'none'/'a.m4a').write_bytes(b'x')
    refused(kelly_cli('index', 'build', str(tmp_path/'none'), '--out', str(tmp_path/'ix2')), 'no audio files', '1 .m4a')
    assert not (tmp_path/'ix2').exists()


BAD_BUILDS = [(['--kind', 'ivf', '--set', 'nprobe=abc'], "nprobe='abc'"), (['--kind', 'hnsw', '--set', 'M=0'], 'M=0'),
              (['--kind', 'hnsw', '--set', 'M=1'], 'M=1'), (['--kind', 'flat', '--set', 'nprobe=abc', 'nlist=-5'],
                                                                'does not apply to kind flat'),
              (['--kind', 'ivf', '--set', 'nlist=-5'], 'nlist=-5'), (['--kind', 'pca-ivfpq', '--set', 'nbits=99'],
                                                                     'nbits=99'),
              (['--kind', 'opq-ivfpq', '--set', 'reduce=32', 'm=5'], 'divides reduce=32'), (['--set', 'nprobe'],
                                                                                            'KEY=VALUE'),
              (['--kind', 'ivf', '--set', 'nprobe=2.5'], 'nprobe=2.5'), (['--kind', 'lsh'], "invalid choice: 'lsh'"),
              (['--set', 'color=red'], 'unknown index setting'), (['--set', 'M=8'], 'does not apply to kind auto'),
              (['--scheduler', 'carrier-pigeon'], "scheduler='carrier-pigeon'")]


@pytest.mark.parametrize('extra,expected', BAD_BUILDS)
def test_bad_index_settings_are_refused_before_any_work(tmp_path, extra, expected):
    (tmp_path/'audio').mkdir()
    sf.write(tmp_path/'audio'/'a.wav', tone(440), 24_000)
    res = kelly_cli('index', 'build', str(tmp_path/'audio'), '--out', str(tmp_path/'ix'), '--no-cache', *extra)
    refused(res, expected)
    assert not (tmp_path/'ix').exists()


@hsettings(max_examples=200, deadline=None)
@given(st.sampled_from(list(KINDS)), st.sampled_from(list(SETTINGS)),
       st.one_of(st.integers(-10, 10 ** 6), st.floats(allow_nan=True), st.text(max_size=5), st.none(), st.booleans()))
def test_check_params_accepts_only_whole_numbers_in_range(kind, key, value):
    try:
        got = check_params(kind, {key: value})
    except InputError as e:
        assert e.field == key and 'Fix:' in str(e)
        return
    what, low, high, none_ok = SETTINGS[key]
    assert key in APPLIES[kind]
    if value is None:
        assert none_ok and got == {key: None}
    else:
        assert not isinstance(value, bool) and isinstance(value,
                                                          int) and low <= value and (high is None or value <= high)


def test_info(music):
    root, audio, _ = music
    res = kelly_cli('index', 'info', str(root/'ix'))
    assert res.returncode == 0, res.stderr
    for line in ['tracks     7', 'kind       flat', 'dimension  384', 'extractor  logmel', f'from {audio.resolve()}',
                 'skipped    2 files',
                 'chosen     an exact scan of 7 × 384 floats']:
        assert line in res.stdout, (line, res.stdout)
    info = json.loads(kelly_cli('index', 'info', str(root/'ix'), '--ids', '--json').stdout)
    assert info['tracks'] == len(info['ids']) == 7 and info['created'] and info['settings'] == {}
    refused(kelly_cli('index', 'info', str(root/'nowhere')), 'no such folder')


def test_recommend_bad_input(music, tmp_path):
    root, audio, _ = music
    first = TrackIndex.load(root/'ix').track_ids[0]
    for args, expected in [(['-k', '0'], '-k=0'), (['-k', 'many'], "invalid int value: 'many'")]:  # through `kelly`
        refused(kelly_cli('recommend', str(root/'ix'), first, *args), expected)
    refused(kelly_cli('recommend', str(tmp_path/'nowhere'), first), 'no such folder')
    refused(kelly_cli('recommend', str(root/'ix'), 'no/such/track'), "unknown track: TRACK='no/such/track'")
    # the same errors, in-process
    for args, expected in [(['-k', '-3'], '-k=-3'), (['-k', '7'], 'k larger than the index')]:
        with pytest.raises(InputError, match=expected):
            recommend_main([str(root/'ix'), first, *args])
    bad = tmp_path/'bad'
    bad.mkdir()
    for name in ('manifest.json', 'index.faiss', 'tracks.parquet'):
        (bad/name).write_bytes((root/'ix'/name).read_bytes())
    (bad/'manifest.json').write_text('{"format": "kelly.TrackIndex"}')
    refused(kelly_cli('recommend', str(bad), first), 'damaged manifest')
    (bad/'manifest.json').write_text('{"format": "kelly.Track')
    with pytest.raises(IntegrityError, match='unreadable manifest'):
        recommend_main([str(bad), first])


def test_recommend_leaves_an_indexed_file_out(music, tmp_path):
    root, audio, _ = music
    ix = TrackIndex.load(root/'ix')
    tid, path = ix.track_ids[0], ix.metadata.path.iloc[0]
    by_id = kelly_cli('recommend', str(root/'ix'), tid, '-k', '6')
    by_path = kelly_cli('recommend', str(root/'ix'), path, '-k', '6')
    copy = tmp_path/('copy' + Path(path).suffix)
    copy.write_bytes(Path(path).read_bytes())
    by_copy = kelly_cli('recommend', str(root/'ix'), str(copy), '-k', '6')
    rows = lambda res: [l.split()[1] for l in res.stdout.strip().splitlines()[3:]]
    assert by_id.returncode == by_path.returncode == by_copy.returncode == 0, by_path.stderr
    assert tid not in rows(by_path) and rows(by_path) == rows(by_id) == rows(by_copy) and len(rows(by_id)) == 6
    assert f'left out: {tid}' in by_path.stdout


def test_recommend_by_id_imports_neither_torch_nor_transformers(music):
    root, _, _ = music
    code = ('import sys; from kelly.cli import main; main(["recommend", sys.argv[1], sys.argv[2], "-k", "2"]); '
            'print(sorted(m for m in ("torch", "transformers", "plotly", "nbformat") if m in sys.modules))')
    res = subprocess.run([sys.executable, '-c', code, str(root/'ix'), TrackIndex.load(root/'ix').track_ids[0]],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1] == '[]', (res.stdout, res.stderr)


def test_synthetic_tracks_build_an_index(tmp_path):
    folder = write_synthetic_tracks(tmp_path/'syn', n=4, seconds=1.0, seed=3)
    res = kelly_cli('index', 'build', str(folder), '--out', str(tmp_path/'ix'), '--no-cache', '--scheduler', 'sync')
    assert res.returncode == 0 and res.stdout.startswith('indexed 4 tracks'), res.stderr
