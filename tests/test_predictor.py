"Tests of kelly.predictor: the network, the loss, leakage refusal, the splits, serving, the loaders and the command."
import math, os

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st

from kelly.core import InputError
from kelly import predictor as P
from kelly.simulate import simulate_catalog
from conftest import kelly_cli


@pytest.fixture(scope='module')
def songs():
    return P.prepare_songs(P.simulated_songs(30, 20, seed=4))


@pytest.fixture(scope='module')
def fitted(songs):
    sp = P.split_songs(songs, 'artist', seed=0)
    fp = P.FeaturePredictor(n_models=3, epochs=30, batch_size=32, patience=5, text_encoder='hashing', seed=0)
    fp.fit(songs.iloc[sp['train']], calibration_songs=songs.iloc[sp['val']])
    return fp, sp


# ---------------------------------------------------------------- the network and the loss

def test_network_shapes_and_bounded_heads():
    torch.manual_seed(0)
    net = P.AudioFeaturePredictor(num_genres=500, num_moods=100)
    assert net.genre_embedding.embedding_dim == 64 and net.mood_embedding.embedding_dim == 32
    assert net.metadata_layer.out_features == 32 and net.fusion_layers[0].in_features == 512
    assert [m.out_features for m in net.fusion_layers if isinstance(m, torch.nn.Linear)] == [256, 128]
    assert list(net.prediction_heads) == list(P.FEATURES)
    B = 64
    ids = torch.randint(0, 501, (B, 5))
    out = net(1e3 * torch.randn(B, 384), ids, torch.randint(0, 101, (B, 3)), 1e3 * torch.randn(B, 6))
    assert out.shape == (B, 8)
    assert ((out[:, :7] >= 0) & (out[:, :7] <= 1)).all()
    assert ((out[:, 7] >= P.TEMPO_RANGE[0]) & (out[:, 7] <= P.TEMPO_RANGE[1])).all()


def test_genre_branch_mean_pools_over_present_tags_only():
    torch.manual_seed(0)
    net = P.AudioFeaturePredictor(num_genres=4, num_moods=2)
    e = net.genre_embedding.weight
    pooled = net._pool(net.genre_embedding, torch.tensor([[1, 3, 0, 0, 0]]))
    assert torch.allclose(pooled[0], (e[1] + e[3]) / 2)
    assert torch.allclose(net._pool(net.genre_embedding, torch.zeros(1, 5, dtype=torch.long)), torch.zeros(1, 64))


def test_loss_is_the_weighted_sum_with_scaled_tempo_and_skips_missing_targets():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(10, 8, generator=g)
    pred[:, 7] *= 200
    tgt = torch.rand(10, 8, generator=g)
    tgt[:, 7] *= 200
    tgt[3, 2] = float('nan')
    total, parts = P.multitask_loss(pred, tgt, parts=True)
    want = 0.0
    for j, f in enumerate(P.FEATURES):
        ok = ~torch.isnan(tgt[:, j])
        s = 1 / 200 if f == 'tempo' else 1.0
        mse = float(((pred[ok, j] - tgt[ok, j]) * s).pow(2).mean())
        assert parts[f'{f}_loss'] == pytest.approx(mse, rel=1e-5)
        want += P.FEATURE_WEIGHTS[f] * mse
    assert float(total) == pytest.approx(want, rel=1e-5)
    assert P.FEATURE_WEIGHTS == dict(energy=1.0, valence=1.0, danceability=1.2, tempo=1.2, acousticness=1.5,
                                     instrumentalness=1.5, liveness=2.0, speechiness=2.0)


def test_metrics_match_sklearn_and_flag_thresholds():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    rng = np.random.default_rng(1)
    T = rng.random((50, 8))
    T[:, 7] = 100 + 20 * rng.standard_normal(50)
    Pr = T + 0.1 * rng.standard_normal((50, 8))
    Pr[:, 7] = T[:, 7] + 30
    m = P.feature_metrics(T, Pr)
    for j, f in enumerate(P.FEATURES):
        assert m.loc[f, 'mse'] == pytest.approx(mean_squared_error(T[:, j], Pr[:, j]))
        assert m.loc[f, 'mae'] == pytest.approx(mean_absolute_error(T[:, j], Pr[:, j]))
        assert m.loc[f, 'r2'] == pytest.approx(r2_score(T[:, j], Pr[:, j]))
    assert not m.loc['tempo', 'meets'] and m.loc['energy', 'meets']


# ---------------------------------------------------------------- leakage

FORBIDDEN = ['popularity', 'aoty_score', 'aoty_num_ratings', 'artist_popularity', 'artist_followers', 'user_ratings',
             'play_counts', 'chart_positions', 'streaming_metrics', 'song_hotttnesss', 'artist_familiarity',
             'spotify_streams', 'peak_chart_position', 'lastfm_listeners', 'playcount']


@pytest.mark.parametrize('name', FORBIDDEN)
def test_each_leaky_input_is_refused_by_name(name, songs, fitted):
    with pytest.raises(P.LeakageError, match=name):
        fp = P.FeaturePredictor(metadata_columns=(*P.METADATA_COLUMNS, name), text_encoder='hashing')
        fp.fit(songs.assign(**{name: 1.0}))
    with pytest.raises(InputError, match=name):
        fitted[0].predict_one('t', 'a', ['pop'], [], {'release_year': 2000, name: 5})


def test_intrinsic_inputs_are_allowed():
    assert P.check_no_leakage(P.METADATA_COLUMNS) == list(P.METADATA_COLUMNS)
    intrinsic = ('title', 'artist', 'genres', 'moods', 'track_number', 'album_total_tracks')
    assert all(P.leakage_kind(c) is None for c in intrinsic)


# ---------------------------------------------------------------- splits

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_artists=st.integers(4, 25))
def test_artist_holdout_puts_each_artist_in_one_split(seed, n_artists):
    df = P.prepare_songs(P.simulated_songs(n_artists, 6, seed=seed % 50))
    sp = P.split_songs(df, 'artist', seed=seed)
    sets = {k: set(df.artist_id.iloc[v]) for k, v in sp.items()}
    assert not (sets['train'] & sets['val']) and not (sets['train'] & sets['test']) and not (sets['val'] & sets['test'])
    assert sorted(np.concatenate(list(sp.values()))) == list(range(len(df)))


def test_temporal_split_orders_years_and_accepts_the_spec_cutoffs(songs):
    sp = P.split_songs(songs, 'temporal')
    y = songs.release_year.to_numpy()
    assert y[sp['train']].max() < y[sp['val']].min() and y[sp['val']].max() < y[sp['test']].min()
    sp2 = P.split_songs(songs, 'temporal', cutoffs=(2018, 2021))
    assert (y[sp2['train']] < 2018).all() and (y[sp2['test']] >= 2021).all()


def test_genre_split_keeps_genre_shares(songs):
    sp = P.split_songs(songs, 'genre', seed=3)
    g = np.array([x[0] for x in songs.genres])
    for gen in set(g):
        n = (g == gen).sum()
        assert abs((g[sp['test']] == gen).sum() - 0.15 * n) <= 1


def test_bad_split_arguments_are_refused(songs):
    with pytest.raises(InputError, match='how'):
        P.split_songs(songs, 'random')
    with pytest.raises(InputError):
        P.split_songs(songs, 'artist', 0.6, 0.5)


# ---------------------------------------------------------------- estimator, serving

def test_scaler_is_fitted_on_the_training_split_only(songs, fitted):
    fp, sp = fitted
    train = songs.iloc[sp['train']]
    M = P.metadata_matrix(train)
    assert np.allclose(fp.encoder_.scaler.mean_, M.mean(0), rtol=1e-5)
    before = fp.encoder_.scaler.mean_.copy()
    fp.predict(songs.iloc[sp['test']].assign(duration_ms=10 ** 7))
    assert np.array_equal(fp.encoder_.scaler.mean_, before)


def test_network_learns_the_simulated_link(songs, fitted):
    fp, sp = fitted
    te = songs.iloc[sp['test']]
    m = P.feature_metrics(te, fp.predict(te))
    assert m.loc['valence', 'r2'] > 0.3 and m.loc['energy', 'r2'] > 0.3


def test_predict_returns_flag_confidence_and_calibrated_std(songs, fitted):
    fp, sp = fitted
    va = songs.iloc[sp['val']]
    p = fp.predict(va, return_std=True)
    assert p.predicted.all() and p.index.equals(va.index)
    assert np.allclose(p.confidence, P.completeness(va))
    cov = P.interval_coverage(va, p, 2)
    assert ((cov >= 0.9) & (cov <= 1.0)).all()  # the band was calibrated to 95 % on these songs
    raw = fp._raw(va)[1]
    assert (p[[f'{f}_std' for f in P.FEATURES]].to_numpy() > raw).all()


def test_single_track_cache_keys_on_every_input_that_changes_the_prediction(songs, fitted):
    fp = fitted[0]
    fp.cache_.clear()
    meta = dict(release_year=2001)
    request = ('Golden Road', 'Someone', ['rock'], ['happy'], meta)
    first = fp.predict_one(*request)
    assert fp.predict_one(*request) == first and (fp.cache_.hits, fp.cache_.misses) == (1, 1)
    others = [('Golden Road', 'Someone', ['jazz'], ['happy'], meta),
              ('Golden Road', 'Someone', ['rock'], ['sad'], meta),
              ('Golden Road', 'Someone', ['rock'], ['happy'], dict(meta, duration_ms=60_000)),
              ('Golden Road', 'Someone', ['rock'], ['happy'], dict(release_year=1971))]
    for k, other in enumerate(others):
        got = fp.predict_one(*other)
        assert fp.cache_.misses == 2 + k, other  # a different request is never answered from the cache
        title, artist, genres, moods, metadata = other
        fresh = fp.predict(pd.DataFrame([dict(title=title, artist=artist, genres=genres, moods=moods, **metadata)]))
        assert got == pytest.approx({**{f: float(fresh[f].iloc[0]) for f in P.FEATURES}, 'predicted': True,
                                     'confidence': float(fresh.confidence.iloc[0])})
        assert got != first
    assert set(first) == set(P.FEATURES) | {'predicted', 'confidence'} and first['predicted'] is True
    assert P.cache_key('T', 'A', ['rock'], [], dict(release_year=2001)) == P.cache_key('T', 'A', 'rock', (),
                                                                                      dict(release_year=2001.0))


def test_a_string_of_genres_or_moods_is_one_tag(fitted):
    fp = fitted[0]
    fp.cache_.clear()
    as_lists = fp.predict_one('Golden Road', 'Someone', ['rock'], ['happy'], dict(release_year=2001))
    fp.cache_.clear()
    as_strings = fp.predict_one('Golden Road', 'Someone', 'rock', 'happy', dict(release_year=2001))
    assert as_strings == as_lists
    want = P.metadata_confidence('Golden Road', 'Someone', ['rock'], ['happy'], dict(release_year=2001))
    assert as_strings['confidence'] == want == pytest.approx(0.4 + 0.2 + 0.15 + 0.03)
    assert P.metadata_confidence('t', 'a', 'pop', [], {}) == pytest.approx(0.4 + 0.2)  # not three tags p, o, p


def test_lru_evicts_the_least_recently_used():
    c = P.LRUCache(3)
    for k in 'abc':
        c.put(k, k)
    c.get('a')
    c.put('d', 'd')
    assert 'b' not in c and list(c.data) == ['c', 'a', 'd']


def test_quantisation_shrinks_and_keeps_predictions_close(songs, fitted):
    fp, sp = fitted
    q = P.quantize(fp)
    assert P.model_size_bytes(q.models_[0]) < 0.5 * P.model_size_bytes(fp.models_[0])
    te = songs.iloc[sp['test']]
    a, b = fp.predict(te), q.predict(te)
    assert np.abs(a[list(P.FEATURES[:7])].to_numpy() - b[list(P.FEATURES[:7])].to_numpy()).max() < 0.1
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in q.models_[0].modules())
    with pytest.raises(InputError):
        q.save('x.pt')


def test_continual_update_changes_heads_only(songs, fitted):
    import copy
    fp = copy.deepcopy(fitted[0])
    before = {k: v.clone() for k, v in fp.models_[0].state_dict().items()}
    fp.continual_update(songs.iloc[fitted[1]['test']], epochs=3)
    after = fp.models_[0].state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith('prediction_heads') for k in changed)
    assert all(p.requires_grad for p in fp.models_[0].parameters())


def test_save_and_load_round_trip(tmp_path, songs, fitted):
    fp, sp = fitted
    fp2 = P.FeaturePredictor.load(fp.save(tmp_path/'p.pt'))
    te = songs.iloc[sp['test']]
    pd.testing.assert_frame_equal(fp.predict(te, return_std=True), fp2.predict(te, return_std=True), atol=1e-5)
    with pytest.raises(InputError):
        P.FeaturePredictor.load(tmp_path/'missing.pt')
    with open(tmp_path/'p.pt', 'rb') as f:
        assert f.read(4) != b'PK\x03\x04'  # safetensors, not a pickle in a zip


class _RunsCode:
    "Unpickling this runs a shell command: what a predictor file must never be able to do."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


def test_model_files_are_never_unpickled(tmp_path, fitted):
    torch.save(dict(params=_RunsCode(tmp_path/'ran'), models=[]), tmp_path/'evil.pt')
    with pytest.raises(InputError, match='not a kelly predictor') as e:
        P.FeaturePredictor.load(tmp_path/'evil.pt')
    assert not (tmp_path/'ran').exists() and 'weights_only' not in str(e.value)
    legacy = fitted[0]  # a file saved by kelly before safetensors (torch's zip) is still read, safely
    state = dict(params={k: (list(v) if isinstance(v, tuple) else v) for k, v in legacy.get_params().items()},
                 encoder=legacy.encoder_.state(), models=[m.state_dict() for m in legacy.models_], calibration=None)
    torch.save(state, tmp_path/'old.pt')
    assert len(P.FeaturePredictor.load(tmp_path/'old.pt').models_) == 3


def test_unfitted_and_tiny_inputs_are_refused(songs):
    with pytest.raises(InputError, match='fit'):
        P.FeaturePredictor().predict(songs)
    with pytest.raises(InputError):
        P.FeaturePredictor(text_encoder='hashing').fit(songs.iloc[:2])


def test_baselines_on_the_same_inputs(songs):
    sp = P.split_songs(songs, 'artist')
    tr, te = songs.iloc[sp['train']], songs.iloc[sp['test']]
    gm = P.GenreMeanBaseline().fit(tr).predict(te)
    g0 = tr.genres.map(lambda g: g[0])
    some = te.genres.iloc[0][0]
    assert gm.iloc[0].energy == pytest.approx(tr.energy[g0 == some].mean())
    gb = P.GradientBoostingBaseline(max_iter=20, text_encoder='hashing').fit(tr)
    assert gb.models_['energy'].n_features_in_ == P.InputEncoder(text_encoder='hashing').fit(tr).dense(tr).shape[1]
    assert gb.predict(te).shape == (len(te), 8)
    assert gb.models_['energy']._bin_mapper.n_bins_non_missing_.max() <= 63  # inputs binned into 63 levels at most


def test_confidence_follows_the_spec():
    full = dict(duration_ms=1, release_year=1, album_total_tracks=1, track_number=1)
    assert P.metadata_confidence('t', 'a', ['g'] * 5, ['m'] * 3, full) == pytest.approx(1.0)
    assert P.metadata_confidence('t', ' ', [], ['m'], {'release_year': float('nan')}) == pytest.approx(0.2 + 0.15)


# ---------------------------------------------------------------- data, command, benchmark

def test_msd_loader_on_a_tiny_stand_in(tmp_path):
    df = pd.DataFrame(dict(track_id=['TRAAAAW128F429D538', 'TRAAABD128F429CF47'], title=['Silent Night', 'Tanssi vaan'],
                           artist_name=['Faster Pussy cat', 'Karkkiautomaatti'],
                           release=['Monster Ballads X-Mas', 'Karkuteillä'],
                           year=[2003, 0], duration=[252.05506, 156.55138], tempo=[87.002, 150.778], energy=[0.0, 0.0],
                           danceability=[0.0, 0.0], loudness=[-4.829, -10.555], key=[10, 9], mode=[0, 1],
                           artist_terms=['glam metal|hard rock|rock', 'pop rock|suomi rock'],
                           song_hotttnesss=[0.54, 0.40], artist_hotttnesss=[0.40, 0.36],
                           artist_familiarity=[0.65, 0.44], tags=['christmas|metal', '']))
    df.to_csv(tmp_path/'msd.csv', index=False)
    s = P.load_msd_table(tmp_path/'msd.csv')
    assert list(s.genres) == [['glam metal', 'hard rock', 'rock'], ['pop rock', 'suomi rock']]
    assert list(s.moods) == [['christmas', 'metal'], []]
    assert s.release_year.iloc[0] == 2003 and math.isnan(s.release_year.iloc[1])
    assert s.duration_ms.iloc[0] == pytest.approx(252055.06) and s.tempo.iloc[1] == pytest.approx(150.778)
    assert not set(P.MSD_POPULARITY) & set(s.columns) and s.valence.isna().all()
    assert s.energy.isna().all() and s.danceability.isna().all()  # the MSD's placeholder zeros are not targets
    fp = P.FeaturePredictor(epochs=1, text_encoder='hashing').fit(pd.concat([s] * 3, ignore_index=True))
    assert fp.predict(s).shape[0] == 2
    df.drop(columns='artist_name').to_csv(tmp_path/'bad.csv', index=False)
    with pytest.raises(InputError, match='artist_name'):
        P.load_msd_table(tmp_path/'bad.csv')


def test_msd_placeholder_zeros_are_missing_not_targets(tmp_path):
    pd.DataFrame(dict(track_id=['A', 'B', 'C'], title=['a', 'b', 'c'], artist_name=['x', 'y', 'z'],
                      year=[1990, 0, 2001],
                      duration=[200.0, 0.0, 180.0], tempo=[0.0, 120.0, 96.5], energy=[0.0, 0.0, 0.0],
                      danceability=[0.0, 0.7, 0.0])).to_parquet(tmp_path/'msd.parquet')
    s = P.load_msd_table(tmp_path/'msd.parquet')
    assert s.tempo.isna().tolist() == [True, False, False] and s.energy.isna().all()
    assert s.danceability.isna().tolist() == [True, False, True]
    assert s.duration_ms.isna().tolist() == [False, True, False]
    assert np.isnan(P.target_matrix(s)[0]).all()  # nothing of song A is learnt: it has no real target


def test_predict_features_command(tmp_path, capsys):
    cat, _ = simulate_catalog(n_artists=5, seed=2, songs_per_artist=8, sections=False, network=False)
    songs = cat.songs.copy()
    for f in P.FEATURES:
        songs.loc[:4, f] = np.nan
    cat.songs = songs
    cat.write(tmp_path/'cat')
    out = tmp_path/'f.parquet'
    assert P.predict_features_main([str(tmp_path/'cat'), '--out', str(out), '--epochs', '2', '--ensemble', '2',
                                    '--text-encoder', 'hashing', '--save-model', str(tmp_path/'m.pt')]) == 0
    res = pd.read_parquet(out)
    assert len(res) == 40 and res.predicted.sum() == 5 and res.predicted.iloc[:5].all()
    assert np.isfinite(res[list(P.FEATURES)].to_numpy()).all() and 'energy_std' in res
    written = res.loc[res.predicted, [*P.FEATURES, *[f'{f}_std' for f in P.FEATURES], 'confidence']].to_numpy()
    assert np.array_equal(written, written.round(P.OUTPUT_DECIMALS))  # no float32 noise such as 0.6083993911743164
    assert (res.confidence[~res.predicted] == 1).all() and res.confidence.between(0, 1).all()
    import pyarrow.parquet as pq
    assert 'confidence' in pq.read_schema(out).metadata[b'kelly.columns'].decode()
    known = ~res.predicted
    assert np.allclose(res.loc[known, 'energy'], songs.loc[known.to_numpy(), 'energy'])
    args = [str(tmp_path/'cat'), '--out', str(tmp_path/'g.csv'), '--model', str(tmp_path/'m.pt'), '--all']
    assert P.predict_features_main(args) == 0
    assert pd.read_csv(tmp_path/'g.csv').predicted.all()
    with open(tmp_path/'g.csv') as f:
        assert all(len(x.split('.')[-1]) <= P.OUTPUT_DECIMALS for x in f.read().replace('\n', ',').split(',')[1:]
                   if x.replace('.', '').isdigit())
    with pytest.raises(InputError, match='--out'):
        P.predict_features_main([str(tmp_path/'cat'), '--out', str(tmp_path/'x.txt')])
    with pytest.raises(SystemExit) as e:
        P.predict_features_main(['--help'])
    help_text = ' '.join(capsys.readouterr().out.split())
    assert e.value.code == 0 and '--out' in help_text and '--scheduler' in help_text
    assert "confidence: how complete the song's inputs are, in [0, 1]" in help_text
    assert 'rounded to 4 decimals' in help_text


def test_minilm_embeddings_are_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv('KELLY_CACHE', str(tmp_path))
    monkeypatch.setattr(P, '_TEXT_MEMORY', {})
    emb = P.TextEmbedder('minilm')
    v = emb(['ada - golden road', 'bo - cold river'])
    assert v.shape == (2, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-3)
    assert len(P.TextStore(tmp_path/'predictor'/'minilm.sqlite')) == 2
    P._TEXT_MEMORY.clear()
    monkeypatch.setattr(P.TextEmbedder, '_encode', lambda self, texts: pytest.fail('should come from the disk cache'))
    assert np.array_equal(P.TextEmbedder('minilm')(['bo - cold river']), v[1:])


def _fake_encode(self, texts):
    return np.stack([P.hashing_embedding(t) for t in texts])


def test_text_store_appends_without_rewriting_what_is_stored(tmp_path, monkeypatch):
    monkeypatch.setenv('KELLY_CACHE', str(tmp_path))
    monkeypatch.setattr(P, '_TEXT_MEMORY', {})
    monkeypatch.setattr(P.TextEmbedder, '_encode', _fake_encode)
    P.TextEmbedder('minilm')([f'artist - song {i}' for i in range(50)])
    path = tmp_path/'predictor'/'minilm.sqlite'
    store = P.TextStore(path)
    first_rows = store._run(lambda con: con.execute('SELECT rowid, key, vector FROM vectors').fetchall())
    P.TextEmbedder('minilm')(['artist - one more song'])
    rows = store._run(lambda con: con.execute('SELECT rowid, key, vector FROM vectors').fetchall())
    assert rows[:50] == first_rows and len(rows) == 51  # the old records untouched, one appended
    P._TEXT_MEMORY.clear()
    got = P.TextEmbedder('minilm')(['artist - song 7', 'artist - one more song'])
    assert np.array_equal(got, _fake_encode(None, ['artist - song 7', 'artist - one more song']))


def _write_records(path, writer):
    "One of several processes writing to one store: 40 records, each read back at once."
    store = P.TextStore(path, dim=4)
    for i in range(40):
        store.put({f'{writer}-{i}': np.full(4, 100 * writer + i, np.float32)})
        assert store.get([f'{writer}-{i}'])


def test_text_store_is_shared_by_concurrent_processes(tmp_path):
    import multiprocessing
    fork = multiprocessing.get_context('fork')  # the children share the imported modules: no second start-up
    procs = [fork.Process(target=_write_records, args=(tmp_path/'s.sqlite', w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    store = P.TextStore(tmp_path/'s.sqlite', dim=4)
    got = store.get([f'{w}-{i}' for w in range(3) for i in range(40)])
    assert len(got) == 120 and all(v[0] == 100 * int(k.split('-')[0]) + int(k.split('-')[1]) for k, v in got.items())


def test_text_store_failures_are_errors_not_silent_misses(tmp_path, monkeypatch):
    monkeypatch.setattr(P, '_TEXT_MEMORY', {})
    monkeypatch.setattr(P.TextEmbedder, '_encode', _fake_encode)
    (tmp_path/'file').write_text('a file where the cache folder should be')
    monkeypatch.setenv('KELLY_CACHE', str(tmp_path/'file'))
    with pytest.raises(P.ConfigError, match='KELLY_CACHE'):
        P.TextEmbedder('minilm')(['a - b'])
    assert P.TextEmbedder('minilm', disk_cache=False)(['a - b']).shape == (1, 384)
    monkeypatch.setenv('KELLY_CACHE', str(tmp_path))
    (tmp_path/'predictor').mkdir()
    (tmp_path/'predictor'/'minilm.sqlite').write_bytes(b'this is not a database' * 100)
    with pytest.raises(P.ConfigError, match='minilm.sqlite') as e:
        P.TextEmbedder('minilm')(['c - d'])
    assert 'delete the file' in str(e.value)


def test_benchmark_runs_tiny():
    from kelly.bench import run_benchmarks
    recs = run_benchmarks('predictor', size='tiny')
    got = {(r['case'], r['metric'], r['unit']) for r in recs}
    store = 'text cache, 30 texts added one at a time'
    assert got == {('batch 80 tracks, text cold', 'throughput', 'tracks/s'),
                   ('batch 80 tracks, text cached', 'throughput', 'tracks/s'),
                   ('single track cold', 'latency', 'ms'), ('single track cached', 'latency', 'ms'),
                   (f'{store}, npz rewrite', 'seconds', 's'), (f'{store}, sqlite append', 'seconds', 's'),
                   (store, 'speedup', 'x')}
    value = {(r['case'], r['metric']): r['value'] for r in recs}
    assert all(math.isfinite(v) and v > 0 for v in value.values())
    ratio = value[(f'{store}, npz rewrite', 'seconds')] / value[(f'{store}, sqlite append', 'seconds')]
    assert value[(store, 'speedup')] == pytest.approx(ratio)


@settings(max_examples=30, deadline=None)
@given(at=st.integers(0, 10**6), cut=st.integers(0, 8), insert=st.binary(max_size=8), in_header=st.booleans())
def test_a_damaged_model_file_is_refused_by_name(fitted, at, cut, insert, in_header):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        good = fitted[0].save(Path(d) / 'm.safetensors').read_bytes()
        header = int.from_bytes(good[:8], 'little')
        at = 8 + at % header if in_header else at % len(good)
        (Path(d) / 'x').write_bytes(good[:at] + insert + good[at + cut:])
        try:
            P.FeaturePredictor.load(Path(d) / 'x')
        except InputError as e:
            assert str(Path(d) / 'x') in str(e) and 'weights_only' not in str(e)


@pytest.fixture(scope='module')
def bad_input_folder(tmp_path_factory):
    "A folder with a catalog, a too small catalog and model files that are not predictors."
    d = tmp_path_factory.mktemp('bad_input')
    simulate_catalog(n_artists=3, seed=2, songs_per_artist=6, sections=False, network=False)[0].write(d/'cat')
    simulate_catalog(n_artists=2, seed=2, songs_per_artist=4, sections=False, network=False)[0].write(d/'small')
    (d/'corrupt.pt').write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save(dict(params=_RunsCode(d/'ran')), d/'evil.pt')
    from safetensors.torch import save_file
    save_file({'w': torch.zeros(2)}, str(d/'other.safetensors'))
    (d/'sub').mkdir()
    return d


BAD_PREDICT = [  # (arguments after the catalog, the argument the error must name)
    (['--out', 'f.txt'], '--out'), (['--out', 'sub'], '--out'), (['--out', 'none/f.csv'], '--out'),
    (['--out', 'f.csv', '--epochs', '0'], '--epochs'), (['--out', 'f.csv', '--epochs', 'abc'], '--epochs'),
    (['--out', 'f.csv', '--ensemble', '0'], '--ensemble'), (['--out', 'f.csv', '--seed', '-1'], '--seed'),
    (['--out', 'f.csv', '--model', 'corrupt.pt'], '--model'), (['--out', 'f.csv', '--model', 'evil.pt'], '--model'),
    (['--out', 'f.csv', '--model', 'other.safetensors'], '--model'),
    (['--out', 'f.csv', '--model', 'none.pt'], '--model'),
    (['--out', 'f.csv', '--save-model', 'none/m.safetensors'], '--save-model'),
    (['--out', 'f.csv', '--model', 'corrupt.pt', '--save-model', 'm.safetensors'], '--save-model'),
    (['--out', 'f.csv', '--save-model', 'f.csv'], '--save-model'), (['--out', 'cat/songs.csv'], '--out'),
]


@pytest.mark.parametrize('args, names', BAD_PREDICT, ids=[' '.join(a) for a, _ in BAD_PREDICT])
def test_predict_features_refuses_bad_input_in_one_line(bad_input_folder, args, names):
    d = bad_input_folder
    before = sorted((p, p.stat().st_mtime_ns) for p in d.rglob('*'))
    paths = ('.txt', '.csv', '.pt', '.safetensors', 'sub')
    res = kelly_cli('predict-features', str(d/'cat'), *[str(d/a) if a.endswith(paths) else a for a in args])
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
    assert names in res.stderr and 'Fix:' in res.stderr and 'Traceback' not in res.stderr
    assert 'weights_only' not in res.stderr
    assert sorted((p, p.stat().st_mtime_ns) for p in d.rglob('*')) == before and not (d/'ran').exists()


def test_too_small_catalog_says_how_many_songs_and_how_to_bring_a_model(bad_input_folder):
    d = bad_input_folder
    res = kelly_cli('predict-features', str(d/'small'), '--out', str(d/'f.csv'))
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1 and not (d/'f.csv').exists()
    assert f'(8 with all eight features known, {P.MIN_TRAINING_SONGS} needed)' in res.stderr
    assert '--save-model' in res.stderr and '--model FILE' in res.stderr


# ---------------------------------------------------------------- a partitioned catalog on Dask

@pytest.fixture(scope='module')
def parts_folder(tmp_path_factory, songs, fitted):
    "Three Parquet parts of a song table (half of the valences unknown) and the fitted predictor saved."
    d = tmp_path_factory.mktemp('parts')
    table = songs.iloc[:90].copy()
    table.loc[table.index[::2], 'valence'] = np.nan
    (d/'parts').mkdir()
    for i in range(3):
        table.iloc[30 * i:30 * (i + 1)].to_parquet(d/'parts'/f'songs-{i}.parquet', index=False)
    fitted[0].save(d/'model.safetensors')
    return d, table


def test_partitioned_catalog_on_a_local_cluster_equals_the_in_memory_prediction(parts_folder, fitted):
    d, table = parts_folder
    out = P.predict_partitioned(fitted[0], d/'parts', d/'local', scheduler='local', workers=2)
    assert sorted(p.name for p in out.iterdir()) == ['part.00000.parquet', 'part.00001.parquet', 'part.00002.parquet']
    want = P.prediction_table(fitted[0], table).reset_index(drop=True)
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=True)
    assert got.predicted.sum() == 45 and 'energy_std' in got
    assert not [p for p in d.iterdir() if p.name.startswith('.')]  # no temporary folder left behind


def test_predict_features_command_on_a_folder_of_parts(parts_folder, fitted):
    d, table = parts_folder
    res = kelly_cli('predict-features', str(d/'parts'), '--model', str(d/'model.safetensors'), '--out', str(d/'cli'),
                    '--scheduler', 'sync', '--all')
    assert res.returncode == 0, res.stderr
    want = P.prediction_table(P.FeaturePredictor.load(d/'model.safetensors'), table, predict_all=True)
    pd.testing.assert_frame_equal(pd.read_parquet(d/'cli'), want.reset_index(drop=True), check_dtype=False,
                                  check_exact=True)
    import pyarrow.parquet as pq
    assert 'confidence' in pq.read_schema(d/'cli'/'part.00000.parquet').metadata[b'kelly.columns'].decode()


BAD_PARTS = [  # (arguments after the folder of parts, the argument the error must name)
    (['--out', 'cli2'], '--model'), (['--out', 'parts', '--model', 'model.safetensors'], '--out'),
    (['--out', 'none/cli2', '--model', 'model.safetensors'], '--out'),
    (['--out', 'cli2', '--model', 'model.safetensors', '--save-model', 'm2.safetensors'], '--save-model'),
    (['--out', 'cli2', '--model', 'model.safetensors', '--scheduler', 'nowhere'], 'scheduler'),
]


@pytest.mark.parametrize('args, names', BAD_PARTS, ids=[' '.join(a) for a, _ in BAD_PARTS])
def test_a_folder_of_parts_refuses_bad_input_in_one_line(parts_folder, args, names):
    d, _ = parts_folder
    before = sorted(p.name for p in d.iterdir())
    res = kelly_cli('predict-features', str(d/'parts'), *[str(d/a) if a.endswith(('.safetensors', 'cli2', 'parts'))
                                                          else a for a in args])
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
    assert names in res.stderr and 'Fix:' in res.stderr and 'Traceback' not in res.stderr
    assert sorted(p.name for p in d.iterdir()) == before
