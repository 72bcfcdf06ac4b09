"kelly.simulate: reproducible, valid catalogs whose statistics agree with the parameters in `truth`."
import math, os, subprocess, sys
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from kelly.core import InputError, file_sha256, project_root
from kelly.data import load_catalog
from kelly.simulate import (DEFAULT_CATALOG_ARGS, SECTION_AMPLITUDE, ergm_sample, network_stats, section_basis,
                            simulate_catalog)


def test_same_seed_same_catalog_bit_for_bit():
    a, ta = simulate_catalog(n_artists=5, seed=11, songs_per_artist=20)
    b, tb = simulate_catalog(n_artists=5, seed=11, songs_per_artist=20)
    assert a.equals(b)
    pd.testing.assert_frame_equal(ta.songs, tb.songs, check_exact=True)
    assert [sorted(g.edges()) for g in ta.networks] == [sorted(g.edges()) for g in tb.networks]
    np.testing.assert_array_equal(ta.section_amplitudes, tb.section_amplitudes)
    c, _ = simulate_catalog(n_artists=5, seed=12, songs_per_artist=20)
    assert not a.equals(c)


def test_default_catalog_in_data_equals_a_fresh_simulation():
    "Equal to the last bits: the same simulation on another CPU differs by ~1e-11 (its BLAS kernels differ)."
    assert load_catalog().equals(simulate_catalog(**DEFAULT_CATALOG_ARGS)[0], rtol=1e-8, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(2, 40), st.integers(1, 12), st.integers(0, 2**32 - 1), st.booleans())
def test_any_size_gives_a_valid_catalog(n, m, per_album, seed, network):
    cat, truth = simulate_catalog(n_artists=n, seed=seed, songs_per_artist=m, songs_per_album=per_album,
                                  min_regime_songs=3, network=network, network_steps=2000)
    assert cat.validate() is cat
    assert len(cat.songs) == n * m == len(truth.songs)
    assert (cat.songs.song_id.to_numpy() == truth.songs.song_id.to_numpy()).all()
    # regimes tile each career and are at least min_regime_songs long
    r = truth.regimes
    assert (r.n_songs >= min(3, m)).all() and (r.groupby('artist_id').n_songs.sum() == m).all()
    # the parts add up to eta and the catalog's emotion is eta clipped
    for v in ('valence', 'arousal', 'dominance'):
        parts = sum(truth.songs[f'{k}_{v}'] for k in ('mean', 'gp', 'album', 'causal', 'noise'))
        np.testing.assert_allclose(parts, truth.songs[f'eta_{v}'])
        np.testing.assert_allclose(cat.songs[f'emo_{v}'], truth.songs[f'eta_{v}'].clip(-1, 1))


def test_bad_arguments_are_refused():
    for kw, field in [(dict(n_artists=0), 'n_artists'), (dict(seed=-2), 'seed'),
                      (dict(songs_per_artist=1.5), 'songs_per_artist'), (dict(coherence=(0.5, 1.2)), 'coherence'),
                      (dict(noise_sd=-1), 'noise_sd'), (dict(gp_sigma=(0, 0.1)), 'gp'),
                      (dict(ergm_theta=dict(stars=1.0)), 'theta')]:
        with pytest.raises(InputError, match=field):
            simulate_catalog(n_artists=kw.pop('n_artists', 3), **kw)


def _graph(arcs, genre):
    G = nx.DiGraph()
    G.add_nodes_from((k, dict(genre=int(g))) for k, g in enumerate(genre))
    G.add_edges_from(arcs)
    return G


def _dyad_expectation(genre, theta, prev=frozenset()):
    "Exact expected statistics of a dyad-independent (T)ERGM: each pair is empty, one arc either way, or mutual."
    n = len(genre)
    e = dict(edges=0.0, mutual=0.0, homophily=0.0)
    for i in range(n):
        for j in range(i + 1, n):
            h = float(genre[i] == genre[j])
            def w(a, b):
                base = theta.get('edges', 0.0) + theta.get('homophily', 0.0) * h
                if 'stability' in theta:
                    base += theta['stability'] if (a, b) in prev else theta['formation']
                return math.exp(base)
            wij, wji = w(i, j), w(j, i)
            wm = wij * wji * math.exp(theta.get('mutual', 0.0))
            Z = 1 + wij + wji + wm
            arcs = (wij + wji + 2 * wm) / Z
            e['edges'] += arcs
            e['mutual'] += wm / Z
            e['homophily'] += h * arcs
    return e


def test_ergm_sampler_matches_the_exact_dyadic_expectation():
    rng = np.random.default_rng(5)
    genre = rng.integers(0, 3, 30)
    theta = dict(edges=-2.5, mutual=1.8, homophily=0.8)
    draws = pd.DataFrame([network_stats(_graph(ergm_sample(30, theta, genre, 5000, np.random.default_rng(s)), genre))
                          for s in range(30)])
    exp = _dyad_expectation(genre, theta)
    for k, v in exp.items():
        se = draws[k].std() / math.sqrt(len(draws))
        assert abs(draws[k].mean() - v) < 4 * se + 0.02 * v, (k, draws[k].mean(), v)


def test_temporal_ergm_matches_the_exact_dyadic_expectation():
    rng = np.random.default_rng(6)
    genre = rng.integers(0, 2, 25)
    prev = set(ergm_sample(25, dict(edges=-2.0), genre, 4000, rng))
    theta = dict(formation=-3.0, stability=2.0, mutual=1.0, homophily=0.5)
    rows = []
    for s in range(30):
        arcs = ergm_sample(25, theta, genre, 5000, np.random.default_rng(100 + s), prev=prev)
        rows.append(network_stats(_graph(arcs, genre), _graph(prev, genre)))
    draws = pd.DataFrame(rows)
    exp = _dyad_expectation(genre, theta, frozenset(prev))
    for k, v in exp.items():
        se = draws[k].std() / math.sqrt(len(draws))
        assert abs(draws[k].mean() - v) < 4 * se + 0.02 * v, (k, draws[k].mean(), v)
    assert (draws.stability + draws.formation == draws.edges).all()


def test_transitivity_term_raises_transitive_triples():
    genre = np.zeros(40, int)
    stats = {}
    for tt in (0.0, 0.4):
        th = dict(edges=-3.0, ttriple=tt)
        stats[tt] = np.mean([network_stats(_graph(ergm_sample(40, th, genre, 8000, np.random.default_rng(s)),
                                                  genre))['ttriple']
                             for s in range(8)])
    assert stats[0.4] > 1.5 * stats[0.0]


def test_network_truth_is_the_catalog_network():
    cat, truth = simulate_catalog(n_artists=40, seed=2, songs_per_artist=10)
    per = truth.periods
    for k, G in enumerate(truth.networks):
        rows = cat.collaborations[(cat.collaborations.date >= per.start[k]) & (cat.collaborations.date < per.end[k])]
        assert set(zip(rows.artist_a, rows.artist_b)) == set(G.edges())
        assert network_stats(G, truth.networks[k - 1] if k else None) == \
            {c: int(v) for c, v in truth.network_stats.iloc[k].drop('period').dropna().items()}


def _best_split(y, min_len=4):
    costs = [((y[:k] - y[:k].mean(0)) ** 2).sum() + ((y[k:] - y[k:].mean(0)) ** 2).sum()
             for k in range(min_len, len(y) - min_len)]
    return min_len + int(np.argmin(costs))


def test_change_points_are_where_truth_says():
    cat, truth = simulate_catalog(n_artists=30, seed=21, songs_per_artist=40, change_rate=50, max_change_points=1,
                                  network=False, sections=False)
    assert len(truth.change_points) == 30
    hits = []
    for cp in truth.change_points.itertuples():
        y = cat.songs[cat.songs.artist_id == cp.artist_id][['emo_valence', 'emo_arousal', 'emo_dominance']].to_numpy()
        hits.append(abs(_best_split(y) - cp.position) <= 3)
    assert np.mean(hits) >= 0.75
    # with no change rate there are none
    _, t0 = simulate_catalog(n_artists=10, seed=1, change_rate=0, network=False, sections=False)
    assert len(t0.change_points) == 0 and (t0.artists.n_change_points == 0).all()


def test_gp_hyperparameters_are_recovered_by_a_plain_fit():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    _, tr = simulate_catalog(n_artists=4, seed=31, songs_per_artist=120, change_rate=0, event_rate=0, album_sd=0,
                             gp_sigma=(0.25, 0.0), gp_lengthscale=(1.5, 0.0), noise_sd=0.1, network=False,
                             sections=False)
    est = []
    for _, g in tr.songs.groupby('artist_id'):
        for v in ('valence', 'arousal', 'dominance'):
            k = ConstantKernel(0.02, (1e-4, 1)) * RBF(2.0, (0.05, 50)) + WhiteKernel(0.01, (1e-5, 1))
            gp = GaussianProcessRegressor(k, random_state=0).fit(g.t.to_numpy()[:, None],
                                                                 (g[f'eta_{v}'] - g[f'mean_{v}']).to_numpy())
            est.append((math.sqrt(gp.kernel_.k1.k1.constant_value), gp.kernel_.k1.k2.length_scale,
                        gp.kernel_.k2.noise_level))
    sigma, ell, noise = np.median(est, axis=0)
    assert abs(sigma / 0.25 - 1) < 0.3 and abs(ell / 1.5 - 1) < 0.3
    true_noise = np.mean([np.trace(np.array(c)) / 3 for c in tr.regimes['cov']])
    assert abs(noise / true_noise - 1) < 0.5


def _pcorr(x, y, z=None):
    x, y = np.asarray(x, float), np.asarray(y, float)
    if z is not None:
        Z = np.column_stack([np.ones(len(x)), z])
        x = x - Z @ np.linalg.lstsq(Z, x, rcond=None)[0]
        y = y - Z @ np.linalg.lstsq(Z, y, rcond=None)[0]
    return np.corrcoef(x, y)[0, 1]


def test_dag_independences_are_visible_in_the_data():
    cat, tr = simulate_catalog(n_artists=80, seed=41, songs_per_artist=40, event_rate=1.0, sections=False,
                               network=False)
    s = cat.songs.join(tr.songs[['life_event', 'life_event_lag1', 'collaboration']])
    crit = 3 / math.sqrt(len(s))
    # edges of the DAG are dependences ...
    for u, v in [('life_event', 'emo_arousal'), ('life_event_lag1', 'emo_valence')]:
        assert tr.dag.has_edge(u, v) and abs(_pcorr(s[u], s[v])) > crit
    # ... and missing edges are independences (on the logit scale of the logistic feature rules)
    logit = lambda p: np.log(p / (1 - p))
    assert not tr.dag.has_edge('life_event', 'emo_valence') and abs(_pcorr(s.life_event, s.emo_valence)) < crit
    assert abs(_pcorr(s.life_event, logit(s.energy), s.emo_arousal)) < crit
    assert abs(_pcorr(s.life_event_lag1, logit(s.valence), s.emo_valence)) < crit
    # and a feature rule's coefficient is what the DAG says
    X = np.column_stack([np.ones(len(s)), s.emo_arousal])
    slope = np.linalg.lstsq(X, logit(s.energy), rcond=None)[0][1]
    assert abs(slope - tr.dag.edges['emo_arousal', 'energy']['weight']) < 0.15


def test_lagged_effect_is_found_by_a_granger_test():
    from statsmodels.tsa.stattools import grangercausalitytests
    cat, tr = simulate_catalog(n_artists=1, seed=51, songs_per_artist=400, event_rate=6.0, change_rate=0, network=False,
                               sections=False)
    s = tr.songs
    y = s.eta_valence - s.mean_valence
    p_fwd = grangercausalitytests(np.column_stack([y, s.life_event]), maxlag=[1])[1][0]['ssr_ftest'][1]
    p_rev = grangercausalitytests(np.column_stack([s.life_event, y]), maxlag=[1])[1][0]['ssr_ftest'][1]
    assert p_fwd < 1e-3 and p_rev > 0.01


def test_album_coherence_and_loadings():
    _, tr = simulate_catalog(n_artists=2, seed=61, songs_per_artist=400, songs_per_album=200, coherence=(0.5, 0.85),
                             network=False, sections=False)
    for alb in tr.albums.itertuples():
        x = tr.songs.loc[tr.songs.album_id == alb.album_id,
                         ['album_valence', 'album_arousal', 'album_dominance']].to_numpy()
        lam = np.array(alb.loadings)
        pop = lam @ lam.T + alb.psi * np.eye(3)
        assert abs(1 - 3 * alb.psi / np.trace(pop) - alb.coherence) < 1e-9  # the coherence is exact
        est = 1 - 3 * alb.psi / np.trace(np.cov(x.T))
        assert abs(est - alb.coherence) < 0.15


def test_sections_follow_the_micro_model():
    cat, tr = simulate_catalog(n_artists=20, seed=71, songs_per_artist=30, network=False)
    sec = cat.sections.merge(cat.songs[['song_id', 'emo_valence', 'emo_arousal', 'emo_dominance', 'duration_ms']],
                             on='song_id')
    assert (sec.end <= sec.duration_ms / 1000).all() and (sec.start < sec.end).all()
    ends = sec.groupby('song_id').end.max()
    np.testing.assert_allclose(ends.to_numpy(),
                               (cat.songs.set_index('song_id').duration_ms[ends.index] / 1000).to_numpy())
    # least squares of (section - song) emotion on phi recovers the mean amplitude matrix
    phi = np.vstack([section_basis(g.kind.tolist()) for _, g in sec.groupby('song_id', sort=False)])
    sec = pd.concat([g for _, g in sec.groupby('song_id', sort=False)])
    for r, v in enumerate(('valence', 'arousal', 'dominance')):
        inner = (sec[f'emo_{v}'].abs() < 0.6).to_numpy()
        y = (sec[v] - sec[f'emo_{v}']).to_numpy()[inner]
        coef = np.linalg.lstsq(phi[inner], y, rcond=None)[0]
        np.testing.assert_allclose(coef, SECTION_AMPLITUDE[r], atol=0.03)
    assert tr.section_amplitudes.shape == (len(cat.songs), 3, 3)


def test_section_emotions_follow_the_continuous_time_chain():
    "Stays and the first sections' emotions agree with the truth's generator and the songs' probabilities."
    from kelly.data import EMOTIONS
    from kelly.simulate import ctmc_transition
    plain, _ = simulate_catalog(n_artists=20, seed=81, songs_per_artist=30, network=False)
    cat, tr = simulate_catalog(n_artists=20, seed=81, songs_per_artist=30, network=False, section_emotions=True)
    pd.testing.assert_frame_equal(cat.sections.drop(columns='emotion'), plain.sections)  # old draws unchanged
    sec = cat.sections
    y = pd.Index(EMOTIONS).get_indexer(sec.emotion)
    assert (y >= 0).all()
    nxt = (sec['index'].to_numpy()[1:] > 0)
    gaps = np.diff(sec.start.to_numpy())[nxt]
    prev, cur = y[:-1][nxt], y[1:][nxt]
    P = ctmc_transition(tr.section_generator.to_numpy(), gaps)
    p_stay = P[np.arange(len(gaps)), prev, prev]
    stay = (prev == cur).astype(float)
    short = gaps < np.median(gaps)
    for part in (short, ~short):  # a chain that ignored the gaps would miss one half or the other
        se = math.sqrt((p_stay[part] * (1 - p_stay[part])).sum()) / part.sum()
        assert abs(stay[part].mean() - p_stay[part].mean()) < 4 * se
    assert stay[short].mean() > stay[~short].mean() + 0.05
    # first sections: the songs' emotion probabilities
    first = sec['index'].to_numpy() == 0
    p = cat.songs.set_index('song_id').loc[sec.song_id[first], [f'p_{e}' for e in EMOTIONS]].to_numpy()
    shares = np.bincount(y[first], minlength=8) / first.sum()
    np.testing.assert_allclose(shares, p.mean(0), atol=4 * math.sqrt(0.25 / first.sum()))



_RUN_EXPORTED_CELLS = '''
import json, sys
runner, notebook, scratch = sys.argv[1:4]
source = json.load(open(notebook))
cells = [''.join(c['source']) for c in source['cells'] if c['cell_type'] == 'code']
cells = [c for c in cells if c.startswith('#| export')]
if runner == 'execnb':                                  # as nbdev-test runs a notebook
    from execnb.shell import CaptureShell
    shell = CaptureShell()
    for cell in cells:
        shell.run(cell)
        if shell.exc is not None:
            raise SystemExit(f'an exported cell failed: {shell.exc!r}')
    print(shell.user_ns['__name__'])
else:                                                   # as `kelly report` runs one, in a kernel
    import nbformat, papermill
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells + ['print(__name__)']])
    book.metadata['kernelspec'] = source['metadata']['kernelspec']
    nbformat.write(book, f'{scratch}/in.ipynb')
    done = papermill.execute_notebook(f'{scratch}/in.ipynb', f'{scratch}/out.ipynb', kernel_name='python3',
                                      progress_bar=False)
    print(done.cells[-1].outputs[0]['text'])
'''


def _catalog_hashes(folder):
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize('runner', ['execnb', 'papermill'])
def test_running_the_notebook_never_writes_the_catalog(tmp_path, runner):
    "The exported cells run as `__main__` under nbdev-test and papermill; they must not rewrite data/catalog."
    committed = project_root()/'data'/'catalog'
    before = _catalog_hashes(committed)
    (tmp_path/'data').mkdir()
    env = dict(os.environ, KELLY_DATA=str(tmp_path/'data'))   # a write would land here, not in the committed files
    notebook = project_root()/'nbs'/'02_simulate.ipynb'
    res = subprocess.run([sys.executable, '-c', _RUN_EXPORTED_CELLS, runner, str(notebook), str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=project_root(), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-1] == '__main__'    # the condition that used to trigger the write
    assert list((tmp_path/'data').iterdir()) == []
    assert _catalog_hashes(committed) == before


def test_python_m_kelly_simulate_still_writes_the_default_catalog(tmp_path):
    "The entry point itself still writes, where KELLY_DATA points (so the test above would have seen a write)."
    env = dict(os.environ, KELLY_DATA=str(tmp_path))
    res = subprocess.run([sys.executable, '-m', 'kelly.simulate'], capture_output=True, text=True, env=env,
                         cwd=project_root(), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert Path(res.stdout.split()[-1]) == tmp_path/'catalog'
    assert load_catalog(tmp_path/'catalog').equals(simulate_catalog(**DEFAULT_CATALOG_ARGS)[0])
