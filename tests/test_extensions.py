"""kelly.music.extensions: the transition chain's contract and its recovery of the simulator's chain, ids and devices,
the mapper's adapt, the integrated model, manifests, weights and weighted training."""
import json, math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from kelly.core import ConfigError, InputError
from kelly.music.extensions import (ContextVocabulary, CulturalContextAdapter, DatasetDiversityManager,
                                    DynamicEmotionToMusicMapper, EmotionTransitionModel, ExtendedEmotionModel,
                                    context_ids, fit_transition_model, minority_recall, read_manifest,
                                    section_sequences, transition_recovery)
from kelly.simulate import simulate_catalog


pytestmark = pytest.mark.usefixtures('torch_one_thread')


def _small_model(seed=0):
    torch.manual_seed(seed)
    return EmotionTransitionModel(hidden_dim=8, num_layers=1, num_heads=2).eval()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 200.0), min_size=1, max_size=6), st.floats(0.0, 100.0), st.integers(0, 2**16))
def test_transitions_are_stochastic_and_a_semigroup(gaps, extra, seed):
    model = _small_model(seed % 7)
    with torch.no_grad():
        model.log_rates.normal_(-3.5, 1.0, generator=torch.Generator().manual_seed(seed))
        P = model.transition(torch.tensor(gaps)).double()
        assert torch.allclose(P.sum(-1), torch.ones(len(gaps), 8, dtype=torch.float64), atol=1e-4)
        assert (P > -1e-5).all()
        a, b = torch.tensor(gaps[0]), torch.tensor(extra)
        assert torch.allclose(model.transition(a + b), model.transition(a) @ model.transition(b), atol=1e-4)


def test_forward_shapes_time_and_batch_independence():
    model = _small_model()
    x = torch.softmax(torch.randn(4, 6, 8), -1)
    t = torch.cumsum(torch.rand(4, 6) * 30, 1)
    evolved, P = model(x, t)
    assert evolved.shape == (4, 6, 8) and P.shape == (4, 5, 8, 8)
    # transitions follow the gaps: a sequence with doubled gaps gets the squared matrices
    P2 = model(x, 2 * t)[1]
    assert torch.allclose(P2, P @ P, atol=1e-5)
    x2 = x.clone()
    x2[3] = torch.softmax(torch.randn(6, 8), -1)
    assert torch.allclose(model(x2, t)[0][:3], evolved[:3], atol=1e-6)
    with pytest.raises(InputError, match='timestamps'):
        model(x, t[:, :4])
    with pytest.raises(InputError, match='backwards'):
        model(x, t.flip(1))
    with pytest.raises(ConfigError, match='num_heads'):
        EmotionTransitionModel(hidden_dim=5, num_heads=4)


def test_recovers_the_simulators_chain_better_than_counts():
    cat, truth = simulate_catalog(n_artists=10, seed=3, songs_per_artist=10, network=False, section_emotions=True)
    seqs = section_sequences(cat)
    model = fit_transition_model(seqs, _small_model(), epochs=25, seed=3)
    rec = transition_recovery(model, truth.section_generator, seqs)
    learned, counts, uniform = rec['mean']
    assert learned < counts < uniform, rec
    # at the short and the long gap the gap-blind count matrix is off; the chain is closer at both
    assert rec.iloc[0, 0] < 0.75 * rec.iloc[1, 0] and rec.iloc[0, 2] < rec.iloc[1, 2], rec


def test_section_sequences_refuse_catalogs_without_section_emotions():
    cat, _ = simulate_catalog(n_artists=2, seed=1, songs_per_artist=3, network=False)
    with pytest.raises(InputError, match='section_emotions=True'):
        section_sequences(cat)


def test_adapter_follows_the_device_and_takes_ids_per_row():
    torch.manual_seed(0)
    adapter = CulturalContextAdapter(num_cultures=4, hidden_dim=16).eval()
    x = torch.randn(3, 8)
    out = adapter(x, culture_id=torch.tensor([1, 2, 1]))
    assert torch.allclose(out['cultural_features'][0], out['cultural_features'][2])
    assert not torch.allclose(out['cultural_features'][0], out['cultural_features'][1])
    meta = adapter.to('meta')(torch.zeros(3, 8, device='meta'), culture_id=2,
                              region_id=torch.tensor([0, 1, 2], device='meta'))
    assert {v.device.type for v in meta.values()} == {'meta'}
    with pytest.raises(InputError, match='culture_id=4'):
        CulturalContextAdapter(num_cultures=4, hidden_dim=16)(x, culture_id=4)
    with pytest.raises(InputError, match='one id per row'):
        CulturalContextAdapter(hidden_dim=16)(x, culture_id=[1, 2])


def test_unknown_names_are_refused_or_mapped_and_catalog_cultures_are_read():
    cat, _ = simulate_catalog(n_artists=8, seed=2, songs_per_artist=2, network=False, sections=False)
    ids, vocab = context_ids(cat)
    names = [vocab['culture'].names[i] for i in ids['culture_id']]
    assert names == cat.songs.artist_id.map(cat.artists.set_index('artist_id').culture).tolist()
    voc = ContextVocabulary(['western'])
    with pytest.raises(InputError, match='unknown culture'):
        voc.ids(['western', 'latin'])
    assert voc.ids(['western', 'latin', None], unknown='map').tolist() == [1, 0, 0]


def test_mapper_adapt_moves_only_that_user():
    torch.manual_seed(1)
    mapper = DynamicEmotionToMusicMapper(num_users=2, hidden_dim=32).eval()
    x = torch.softmax(torch.randn(12, 8), -1)
    base = mapper(x)
    target = base['register_center'].detach() - 5.0
    losses = mapper.adapt(0, x, dict(register_center=target), steps=120)
    assert losses[-1] < 0.05 * losses[0]
    with torch.no_grad():
        assert (mapper(x, user_id=0)['register_center'] - target).abs().mean() < 1.0
        assert torch.allclose(mapper(x, user_id=1)['register_center'], base['register_center'])
        assert torch.allclose(mapper(x)['register_center'], base['register_center'])
    with pytest.raises(InputError, match='num_users'):
        DynamicEmotionToMusicMapper(hidden_dim=8)(x, user_id=0)


def test_extended_model_with_the_multiscale_net_fits_and_backpropagates():
    emotion = pytest.importorskip('kelly.music.emotion')
    if not hasattr(emotion, 'MultiScaleEmotionNet'):
        pytest.skip('kelly.music.emotion has no MultiScaleEmotionNet yet')
    torch.manual_seed(0)
    model = ExtendedEmotionModel(emotion.MultiScaleEmotionNet(), base_kind='logits_vad', num_users=2,
                                 temporal=dict(hidden_dim=8, num_layers=1, num_heads=2), cultural=dict(hidden_dim=16),
                                 mapper=dict(hidden_dim=16))
    mels = tuple(torch.randn(2, 64, n) for n in (40, 20, 10))
    context = torch.softmax(torch.randn(2, 3, 8), -1)
    out = model(mels, culture_id=torch.tensor([1, 3]), user_id=1, temporal_context=context,
                timestamps=torch.tensor([[0.0, 10.0, 25.0], [0.0, 5.0, 6.0]]))
    assert out['emotion_logits'].shape == (2, 8) and out['adapted_emotion'].shape == (2, 8)
    assert out['emotion_transitions'].shape == (2, 2, 8, 8)
    loss = out['music_parameters']['tempo_suggested'].sum() + (out['adapted_emotion'] ** 2).sum()
    loss.backward()
    base_grads = [p.grad for n, p in model.named_parameters() if n.startswith('base.')]
    assert base_grads and all(g is not None and g.abs().sum() > 0 for g in base_grads)
    with pytest.raises(InputError, match='base output'):
        ExtendedEmotionModel(nn.Linear(4, 8), base_kind='logits_vad')(torch.randn(2, 4))


def test_malformed_manifest_line_is_named(tmp_path):
    path = tmp_path/'manifest.jsonl'
    good = json.dumps(dict(culture='latin', emotion='happy'))
    lines = [good] * 4 + ['{"culture": latin}'] + [json.dumps(dict(culture='x'))]
    path.write_text('\n'.join(lines) + '\n')
    with pytest.raises(InputError, match=r'manifest\.jsonl:5') as err:
        read_manifest(path)
    assert 'malformed manifest line' in str(err.value)
    path.write_text('\n'.join(lines[:4]) + '\n')
    assert DatasetDiversityManager(path).analyze_diversity()['num_culture'] == 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(['a', 'b', 'c', 'd']), min_size=2, max_size=60))
def test_weights_give_each_group_the_same_total(groups):
    dm = DatasetDiversityManager(pd.DataFrame(dict(culture=groups)))
    w = dm.get_sampling_weights(by='culture')
    totals = pd.Series(w).groupby(groups).sum()
    assert np.allclose(totals, totals.iloc[0]) and math.isclose(w.mean(), 1.0)
    rep = dm.analyze_diversity()
    k = len(set(groups))
    assert 0.0 <= rep['culture_balance'] <= 1.0 + 1e-12 and rep['num_culture'] == k
    if all(groups.count(g) == groups.count(groups[0]) for g in set(groups)) and k > 1:
        assert math.isclose(rep['culture_balance'], 1.0)


def test_diversity_weights_raise_minority_recall():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    res = minority_recall(X / 16.0, y, seeds=(0, 1), epochs=12)
    per_seed = res.groupby(['seed', 'weighted']).recall.mean().unstack()
    gain = per_seed[True] - per_seed[False]
    assert (gain > 0.1).all(), per_seed


def test_training_runs_on_the_threads_asked_and_restores_them(monkeypatch):
    "fit_transition_model and minority_recall limit torch's threads while they train, and give them back after."
    from kelly.core import limit_threads
    from kelly.training import Trainer
    seen, real_fit = [], Trainer.fit
    def fit(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, 'fit', fit)
    cat, _ = simulate_catalog(n_artists=2, seed=1, songs_per_artist=3, network=False, section_emotions=True)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 4)).astype(np.float32), np.arange(200) % 3
    with limit_threads(2):
        fit_transition_model(section_sequences(cat), _small_model(), epochs=1, threads=1)
        minority_recall(X, y, minority=(2,), keep=0.5, seeds=(0,), epochs=1, threads=1)
        assert torch.get_num_threads() == 2  # restored
        fit_transition_model(section_sequences(cat), _small_model(), epochs=1, threads=2)
    assert seen == [1, 1, 1, 2]  # one chain fit, two recall fits (unweighted, weighted), then two threads
