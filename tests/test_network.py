"""Tests of kelly.career.network that are awkward inside the notebook: leakage across the artist split, GCN/GAT
against references on random graphs, determinism."""

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

from kelly.career.network import (GATLayer, GCNLayer, ShiftNet, bootstrap_artists, compare_on_heldout, fit_shift_net,
                                  gcn_norm, influence_basis, influence_communities, influence_graph, influence_matrix,
                                  collab_strength, plant_influence, restrict_catalog, shift_events, split_artists)
from kelly.core import InputError
from kelly.simulate import simulate_catalog


@pytest.fixture(scope='module')
def catalog():
    cat, _ = simulate_catalog(n_artists=16, seed=3, songs_per_artist=12, sections=False)
    return cat


def _perturb_songs(cat, artists, rng):
    "A copy of `cat` whose songs of `artists` get new random emotions."
    t = cat.tables()
    s = t['songs'].copy()
    rows = s.artist_id.isin(set(artists))
    for c in ('emo_valence', 'emo_arousal', 'emo_dominance'):
        s.loc[rows, c] = rng.uniform(-1, 1, rows.sum())
    t['songs'] = s
    return type(cat)(**t)


def test_no_test_artist_reaches_training(catalog):
    """Training events hold only training artists; changing every test artist's emotions changes neither them nor the
    trained weights."""
    train_ids, test_ids = split_artists(catalog.artists.artist_id, 0.3, seed=1)
    assert not set(train_ids) & set(test_ids) and sorted(train_ids + test_ids) == sorted(catalog.artists.artist_id)
    train = shift_events(restrict_catalog(catalog, train_ids))
    assert set(train.meta.artist_id) <= set(train_ids)
    other = _perturb_songs(catalog, test_ids, np.random.default_rng(0))
    train2 = shift_events(restrict_catalog(other, train_ids))
    for f in ('x', 'adj', 'mask', 'target'):
        np.testing.assert_array_equal(getattr(train, f), getattr(train2, f))
    m1, _ = fit_shift_net('gat', train, hidden=4, epochs=2, seed=0)
    m2, _ = fit_shift_net('gat', train2, hidden=4, epochs=2, seed=0)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    # whereas the test events do see the test artists' own emotions (and so their targets change)
    test1, test2 = shift_events(catalog, test_ids), shift_events(other, test_ids)
    assert set(test1.meta.artist_id) <= set(test_ids)
    assert not np.allclose(test1.target, test2.target)


def test_events_never_look_ahead(catalog):
    "Changing everything dated on or after an event's release leaves that event's inputs unchanged."
    E = shift_events(catalog)
    r = len(E) // 2
    cut = E.meta.date[r]
    t = catalog.tables()
    s = t['songs'].copy()
    late = s.release_date >= cut
    s.loc[late, 'emo_valence'] = -s.loc[late, 'emo_valence']
    c = t['collaborations']
    t['collaborations'] = c[c.date < cut].reset_index(drop=True)
    t['songs'] = s
    E2 = shift_events(type(catalog)(**t))
    same = (E.meta.date < cut).to_numpy()
    assert same.sum() > 10
    for f in ('x', 'adj', 'mask'):
        np.testing.assert_array_equal(getattr(E, f)[same], getattr(E2, f)[same])


def test_gcn_norm_matches_networkx_on_random_graphs():
    rng = np.random.default_rng(5)
    for seed in range(5):
        G = nx.gnp_random_graph(12, 0.3, seed=seed)
        for u, v in G.edges():
            G[u][v]['weight'] = float(rng.uniform(0.1, 3))
        A = nx.to_numpy_array(G, nodelist=range(12))
        Gs = G.copy()
        Gs.add_weighted_edges_from((u, u, 1.0) for u in Gs)
        ref = np.eye(12) - nx.normalized_laplacian_matrix(Gs, nodelist=range(12), weight='weight').toarray()
        np.testing.assert_allclose(gcn_norm(torch.tensor(A)).numpy(), ref, atol=1e-12)
        # batched and masked: each graph normalised on its own
        B = torch.tensor(np.stack([A, A[::-1, ::-1].copy()]))
        np.testing.assert_allclose(gcn_norm(B)[1].numpy(), ref[::-1, ::-1], atol=1e-12)


def test_gat_attention_sums_to_one_and_is_permutation_equivariant():
    torch.manual_seed(0)
    layer = GATLayer(6, 5, heads=3).double()
    h = torch.randn(2, 9, 6, dtype=torch.float64)
    adj = (torch.rand(2, 9, 9) < 0.3).double() * torch.rand(2, 9, 9)
    alpha, _ = layer.attention(h, adj)
    np.testing.assert_allclose(alpha.sum(2).detach().numpy(), 1.0, atol=1e-12)
    perm = torch.randperm(9)
    out = layer(h, adj)
    out_p = layer(h[:, perm], adj[:, perm][:, :, perm])
    np.testing.assert_allclose(out_p.detach().numpy(), out[:, perm].detach().numpy(), atol=1e-10)


def test_gcn_layer_is_permutation_equivariant():
    torch.manual_seed(1)
    layer = GCNLayer(4, 3).double()
    h = torch.randn(1, 7, 4, dtype=torch.float64)
    adj = torch.rand(1, 7, 7, dtype=torch.float64) * (torch.rand(1, 7, 7) < 0.5)
    perm = torch.randperm(7)
    out = layer(h, gcn_norm(adj))
    out_p = layer(h[:, perm], gcn_norm(adj[:, perm][:, :, perm]))
    np.testing.assert_allclose(out_p.detach().numpy(), out[:, perm].detach().numpy(), atol=1e-12)


def test_influence_graph_arcs_follow_collaborations(catalog):
    G = influence_graph(catalog)
    col = catalog.collaborations
    pairs = set(zip(col.artist_b, col.artist_a)) | set(zip(col.artist_a, col.artist_b))
    assert set(G.edges()) == pairs
    assert all(0 < w < 1 for *_, w in G.edges(data='weight'))
    basis = influence_basis(catalog, weights=dict(collab=1.0, genre=0.0, time=0.0))
    W = influence_matrix(basis, collab_strength(basis))
    S = collab_strength(basis)
    np.testing.assert_allclose(W, np.where(S > 0, S / (1 + S), 0.0))
    with pytest.raises(InputError):
        influence_graph(catalog, time_scale=0)


def test_communities_cover_every_artist_and_are_seeded(catalog):
    G = influence_graph(catalog)
    c1, c2 = influence_communities(G, seed=4), influence_communities(G, seed=4)
    assert c1.index.tolist() == list(G.nodes()) and c1.notna().all()
    pd.testing.assert_series_equal(c1, c2)


def test_planted_influence_is_found_by_the_linear_graph_model():
    "With a strong planted pull, the ridge with neighbours beats the ridge without on held-out artists."
    cat, _ = simulate_catalog(n_artists=40, seed=2, songs_per_artist=20, sections=False)
    planted = plant_influence(cat, 0.6)
    planted.validate()
    err, hist, split = compare_on_heldout(planted, 0.3, seed=2, kinds=('mlp',), hidden=4, epochs=2)
    assert set(err.artist_id) <= set(split['test'])
    assert err.ridge_graph.mean() < err.ridge.mean()
    assert set(hist.model) == {'mlp'}


def test_bad_inputs(catalog):
    with pytest.raises(InputError):
        ShiftNet('transformer')
    with pytest.raises(InputError):
        split_artists(['a'], 0.5)
    with pytest.raises(InputError):
        shift_events(catalog, targets_for=['nobody'])
    with pytest.raises(InputError):
        plant_influence(catalog, 1.5)
    with pytest.raises(InputError):
        bootstrap_artists(pd.DataFrame(dict(artist_id=['a'], x=[1.0])), baseline='y')
