"""Tests of kelly.career.deep that are awkward inside the notebook: the KL against torch's reference, no leakage
across the artist split, the cross-modal effect learned, the sparse GCN against the dense one, determinism, the
benchmark, and `kelly train deep` in one and in two processes."""
import json, math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kelly.career.deep import (
    EmotionalTransformer,
    bench_deep,
    fit_transformer,
    fit_vae,
    kl_normal,
    next_release_windows,
    plant_unusual,
    predict_windows,
    release_modalities,
    sparse_gcn_layer,
    sparse_gcn_norm,
    vae_features,
)
from kelly.career.network import GCNLayer, gcn_norm
from kelly.simulate import simulate_catalog


@pytest.fixture(scope='module')
def catalog():
    cat, _ = simulate_catalog(n_artists=8, seed=5, songs_per_artist=10, sections=False, network=False)
    return cat


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_kl_matches_torch_distributions(seed):
    "The analytic KL (the sign the spec lost restored) equals torch.distributions' KL of N(mu, var) from N(0, 1), >= 0."
    g = torch.Generator().manual_seed(seed)
    mu = 3 * torch.randn(4, 3, generator=g, dtype=torch.float64)
    var = torch.exp(2 * torch.randn(4, 3, generator=g, dtype=torch.float64))
    q = torch.distributions.Normal(mu, var.sqrt())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(kl_normal(mu, var), ref, rtol=1e-10, atol=1e-10)
    assert (kl_normal(mu, var) >= 0).all()


def test_windows_never_hold_test_artists(catalog):
    "Windows of the training artists are unchanged when every test artist's songs change."
    mods = release_modalities(catalog)
    ids = sorted(catalog.artists.artist_id)
    train, test = ids[:5], ids[5:]
    w = next_release_windows(mods, train, max_len=6)
    assert set(w['artist_id']) <= set(train)
    songs = catalog.songs.copy()
    rows = songs.artist_id.isin(test)
    songs.loc[rows, ['emo_valence', 'energy']] = np.random.default_rng(0).uniform(0, 1, (rows.sum(), 2))
    other = type(catalog)(**{**{k: getattr(catalog, k) for k in catalog.__dataclass_fields__}, 'songs': songs})
    w2 = next_release_windows(release_modalities(other), train, max_len=6)
    for k in ('audio', 'context', 'target', 'times'):
        np.testing.assert_array_equal(w[k], w2[k])


def _answer_windows(n, L, rng):
    "Synthetic windows whose next emotion is the last one moved against the last release's energy (cross-modal)."
    audio = rng.uniform(0, 1, (n, L, 8)).astype(np.float32)
    context = np.zeros((n, L, 15), np.float32)
    context[:, :, :3] = rng.normal(0, 0.3, (n, L, 3))
    target = context[:, -1, :3] - 0.8 * (audio[:, -1, :1] - 0.5)
    times = np.cumsum(rng.uniform(0.2, 1, (n, L + 1)), 1).astype(np.float32)
    return dict(audio=audio, lyrics=np.zeros((n, L, 4), np.float32), context=context, times=times,
                pad=np.zeros((n, L), bool), target=target.astype(np.float32))


def test_transformer_learns_a_cross_modal_effect():
    "Trained on windows with a planted audio -> emotion effect, the transformer beats the last value on fresh windows."
    rng = np.random.default_rng(0)
    train, test = _answer_windows(400, 4, rng), _answer_windows(200, 4, rng)
    model, _ = fit_transformer(train, epochs=15, batch_size=16, d_model=16, n_heads=2, seed=0)
    err = np.sqrt(((predict_windows(model, test) - test['target']) ** 2).mean())
    naive = np.sqrt(((test['context'][:, -1, :3] - test['target']) ** 2).mean())
    assert err < 0.6 * naive


def test_training_is_deterministic():
    "The same seed gives the same weights."
    w = _answer_windows(64, 3, np.random.default_rng(1))
    a, _ = fit_transformer(w, epochs=2, d_model=8, n_heads=2, seed=3)
    b, _ = fit_transformer(w, epochs=2, d_model=8, n_heads=2, seed=3)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k


@settings(max_examples=10, deadline=None)
@given(st.integers(2, 40), st.integers(0, 120), st.integers(0, 10_000))
def test_sparse_gcn_equals_dense(n, m, seed):
    "The sparse GCN propagation equals kelly.career.network's dense GCNLayer on random weighted graphs."
    g = torch.Generator().manual_seed(seed)
    e = torch.randint(0, n, (2, m), generator=g)
    e = torch.unique(e[:, e[0] != e[1]], dim=1)
    w = torch.rand(e.shape[1], generator=g) + 0.1
    dense = torch.zeros(n, n)
    dense[e[0], e[1]] = w
    torch.manual_seed(seed)
    layer, h = GCNLayer(3, 2), torch.randn(n, 3, generator=g)
    assert torch.allclose(sparse_gcn_layer(layer, h, sparse_gcn_norm(e, n, w)), layer(h, gcn_norm(dense)), atol=1e-5)


def test_plant_unusual_only_touches_audio(catalog):
    "Planted songs keep their emotion columns and get another song's audio features; the VAE features stay finite."
    odd, lab = plant_unusual(catalog.songs, 0.2, seed=1)
    from kelly.data import AUDIO_FEATURES
    same = [c for c in catalog.songs.columns if c not in AUDIO_FEATURES]
    assert odd[same].equals(catalog.songs.reset_index(drop=True)[same])
    assert lab.sum() == round(0.2 * len(odd))
    X, _ = vae_features(odd)
    _, tr = fit_vae(X, epochs=2)
    assert np.isfinite(tr.history[-1]['kl']) and tr.history[-1]['kl'] >= 0


def test_transformer_rejects_bad_settings():
    "Bad modalities and head counts raise InputError naming the field."
    from kelly.core import InputError
    with pytest.raises(InputError, match='modalities'):
        EmotionalTransformer(modalities=())
    with pytest.raises(InputError, match='n_heads'):
        EmotionalTransformer(d_model=10, n_heads=3)


def test_bench_deep_tiny_runs():
    "The benchmark runs at its tiny size and returns well-formed records (no timing is asserted)."
    recs = bench_deep('tiny')
    assert {r['metric'] for r in recs} == {'exponent', 'train_throughput', 'forward_latency_per_artist',
                                           'speedup_2_vs_1_processes'}
    assert all(set(r) == {'case', 'metric', 'value', 'unit'} and np.isfinite(r['value']) for r in recs)
    speed = {r['case']: r['value'] for r in recs if r['case'].startswith('kelly train deep')}
    ratio = speed['kelly train deep']
    assert ratio == speed['kelly train deep, processes=2'] / speed['kelly train deep, processes=1']


def test_train_deep_two_processes_match_one(tmp_path, capsys):
    "kelly train deep --nproc 2 (torchrun, gloo) writes the weights one process writes, up to float rounding."
    from kelly.career.deep import train_main
    from safetensors.torch import load_file
    small = ['--artists', '4', '--songs', '8', '--max-len', '4', '--d-model', '8', '--epochs', '3', '--seed', '2']
    one, two = tmp_path / 'one.safetensors', tmp_path / 'two.safetensors'
    assert train_main(['deep', '--out', str(one), *small]) == 0
    assert train_main(['deep', '--out', str(two), '--nproc', '2', *small]) == 0
    summaries = [json.loads(p.with_suffix('.json').read_text()) for p in (one, two)]
    assert [s['processes'] for s in summaries] == [1, 2]
    assert summaries[0]['best_epoch'] == summaries[1]['best_epoch']
    a, b = load_file(str(one)), load_file(str(two))
    assert set(a) == set(b)
    # float rounding of the averaged gradients differs; AdamW's normalised steps carry it to ~1e-5 on parameters
    # whose gradients are near 0, far below the distance training moved them (checked below)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=0), (k, (a[k] - b[k]).abs().max())
    assert math.isclose(summaries[0]['best_val_mse'], summaries[1]['best_val_mse'], rel_tol=1e-4)
    from kelly.core import seed_everything
    seed_everything(2)
    initial = EmotionalTransformer(d_model=8).state_dict()   # the worker's network before training (same seed)
    assert max(float((a[k] - initial[k]).abs().max()) for k in a if k in initial) > 1e-3   # training moved them


def test_train_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    "A bad argument is one line on stderr and exit status 2, before anything is written."
    from kelly.career.deep import train_main
    for bad in (['deep', '--out', str(tmp_path / 'w.bin')], ['deep', '--out', str(tmp_path / 'w.safetensors'),
                                                              '--nnodes', '2', '--node-rank', '3']):
        with pytest.raises(SystemExit) as stop:
            train_main(bad)
        assert stop.value.code == 2
        assert capsys.readouterr().err.count('\n') == 1
    assert list(tmp_path.iterdir()) == []
