"Tests of kelly.career.causal against references we did not write: causal-learn, statsmodels, known graphs."
import itertools, math, warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from kelly.core import InputError
from kelly.career.causal import (SCM, bh_adjust, compare_graphs, cpdag, edge_marks, fisher_z, granger,
                                 granger_graph, granger_power, granger_pooled, career_series, pc, random_linear_scm,
                                 sachs, score_pc_on_simulator, simulate_var)


def test_fisher_z_matches_causal_learn():
    from causallearn.utils.cit import CIT
    m = random_linear_scm(6, expected_degree=3, seed=4)
    data = m.sample(400, seed=5)
    test = CIT(data.to_numpy(), 'fisherz')
    names = list(data.columns)
    checked = 0
    for i, j in itertools.combinations(range(6), 2):
        rest = [k for k in range(6) if k not in (i, j)]
        for size in (0, 1, 2):
            S = rest[:size]
            stat, p = fisher_z(data, names[i], names[j], [names[k] for k in S])
            assert p == pytest.approx(test(i, j, S), abs=1e-10)
            assert stat >= 0
            checked += 1
    assert checked == 45


def test_fisher_z_differs_from_the_printed_statistic():
    "The spec's log-determinant ratio is not the Fisher z statistic (it ignores the sign and scale of r)."
    m = random_linear_scm(4, expected_degree=3, seed=1)
    d = m.sample(300, seed=2)
    R = np.corrcoef(d[['X0', 'X1']].to_numpy(), rowvar=False)
    printed = 0.5 * math.log(abs(np.linalg.det(R)) / (R[0, 0] * R[1, 1])) * math.sqrt(300 - 3)
    stat, _ = fisher_z(d, 'X0', 'X1')
    assert printed <= 0 and stat >= 0 and abs(printed + stat) > 1e-3


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_linear_effects_equal_path_sums_and_interventions(seed):
    m = random_linear_scm(8, expected_degree=3, seed=seed)
    order = list(nx.topological_sort(m.graph))
    x, y = order[0], order[-1]
    paths = sum(math.prod(m.graph.edges[u, v]['weight'] for u, v in zip(p, p[1:]))
                for p in nx.all_simple_paths(m.graph, x, y))
    assert m.total_effect(x, y) == pytest.approx(paths, abs=1e-9)
    assert m.simulated_effect(x, y, n=500, seed=seed) == pytest.approx(paths, abs=1e-8)
    for u, v in m.graph.edges:
        assert m.simulated_effect(u, v, kind='direct', n=500) == pytest.approx(m.graph.edges[u, v]['weight'], abs=1e-8)


def test_nonlinear_intervention_by_simulation():
    m = SCM().add('z').add('x', {'z': 1.0}).add('y', ['x', 'z'], fn=lambda pa, u: np.sin(pa['x']) + pa['z'] + u)
    # E[Y | do(X=x)] = sin(x) + E[z]: the confounder z does not bias the interventional contrast
    assert m.simulated_effect('x', 'y', x0=0.0, x1=1.0, n=4000) == pytest.approx(math.sin(1.0), abs=1e-9)
    d = m.sample(20000, seed=1)
    x_random = np.random.default_rng(2).normal(0, math.sqrt(2), 20000)  # same spread as the observed x, no confounding
    r = m.sample(20000, seed=1, do={'x': x_random})
    confounded, causal = np.polyfit(d.x, d.y, 1)[0], np.polyfit(r.x, r.y, 1)[0]
    assert confounded - causal == pytest.approx(0.5, abs=0.05)  # cov(x, z) / var(x) = 1/2 is the confounding bias


def test_cpdag_of_chain_and_collider():
    chain = cpdag(nx.DiGraph([('a', 'b'), ('b', 'c')]))
    assert {m for *_, m in edge_marks(chain)} == {'---'}
    coll = cpdag(nx.DiGraph([('a', 'c'), ('b', 'c')]))
    assert {(u, v) for u, v, m in edge_marks(coll)} == {('a', 'c'), ('b', 'c')}


def test_pc_recovers_random_linear_dags():
    scores = []
    for seed in range(6):  # random signs can nearly cancel along two paths (near-unfaithful): judge the average
        m = random_linear_scm(8, seed=seed)
        scores.append(compare_graphs(pc(m.sample(4000, seed=seed), alpha=0.01), cpdag(m.graph)))
    s = pd.DataFrame(scores).mean()
    assert s.skeleton_recall >= 0.85 and s.skeleton_precision >= 0.85
    assert s.shd <= 3


def test_pc_background_knowledge():
    m = SCM().add('a').add('b', {'a': 1.0}).add('c', {'b': 1.0})
    d = m.sample(2000, seed=0)
    assert {mk for *_, mk in edge_marks(pc(d))} == {'---'}  # a chain is not identifiable from data
    G = pc(d, time_order=[['a'], ['b'], ['c']])
    assert G.edges['a', 'b']['mark'] == '-->' and G.edges['b', 'c']['mark'] == '-->'
    G2 = pc(d, forbidden=[('a', 'b')], required=[('b', 'a')])
    assert G2.edges['b', 'a']['mark'] == '-->' and not G2.has_edge('a', 'b')
    with pytest.raises(InputError, match='forbidden'):
        pc(d, forbidden=[('a', 'zz')])
    with pytest.raises(InputError, match='NaN'):
        pc(d.assign(a=np.r_[np.nan, d.a[1:]]))


def test_pc_kernel_test_finds_nonlinear_dependence():
    m = SCM().add('x').add('y', ['x'],
                           fn=lambda pa, u: pa['x'] ** 2 + 0.3 * u).add('z', ['y'],
                                                                        fn=lambda pa, u: np.cos(pa['y']) + 0.3 * u)
    d = m.sample(250, seed=3)
    assert not pc(d, indep_test='fisherz').has_edge('x', 'y')  # x and x^2 are uncorrelated
    assert pc(d, indep_test='kci').has_edge('x', 'y')


def test_pc_on_the_simulator_beats_chance_and_time_order_helps():
    s = score_pc_on_simulator(seeds=[11, 12], n_artists=12)
    by = s.groupby('setting').mean(numeric_only=True)
    assert by.loc['time order', 'skeleton_recall'] >= 0.5 and by.loc['time order', 'skeleton_precision'] >= 0.7
    assert by.loc['time order', 'orientation_precision'] > by.loc['data only', 'orientation_precision']
    assert by.loc['time order', 'shd'] < by.loc['time order, genre not adjusted', 'shd']


@pytest.mark.parametrize('lag', [1, 3])
def test_pairwise_granger_equals_statsmodels(lag):
    from statsmodels.tsa.stattools import grangercausalitytests
    d = simulate_var(np.array([[[0.4, 0.0], [0.3, 0.2]]]), 250, seed=lag)
    tab = granger(d, lag=lag, mode='pairwise', stationarity=None).set_index(['cause', 'effect'])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref = grangercausalitytests(d[['y1', 'y0']].to_numpy(), [lag])[lag][0]['ssr_ftest']
    r = tab.loc[('y0', 'y1')]
    assert r.F == pytest.approx(ref[0], rel=1e-9) and r.p_value == pytest.approx(ref[1], abs=1e-12)
    assert r.df_denom == ref[2] == 250 - lag - 2 * lag - 1


def test_conditional_granger_equals_statsmodels_ols():
    import statsmodels.api as sm
    d = simulate_var(np.array([[[0.5, 0, 0], [0.3, 0.2, 0], [0, 0.3, 0.1]], [[0, 0, 0], [0, 0, 0], [0.2, 0, 0]]]), 200,
                     seed=1)
    tab = granger(d, lag=2, stationarity=None).set_index(['cause', 'effect'])
    X = d.to_numpy()
    lags = np.hstack([X[2 - l:200 - l] for l in (1, 2)])
    full = sm.OLS(X[2:, 2], sm.add_constant(lags)).fit()
    restricted = sm.OLS(X[2:, 2], sm.add_constant(np.delete(lags, [0, 3], axis=1))).fit()
    F, p, dfn = full.compare_f_test(restricted)
    r = tab.loc[('y0', 'y2')]
    assert r.F == pytest.approx(F, rel=1e-8) and r.p_value == pytest.approx(p, abs=1e-12) and r.df_num == dfn == 2


def test_granger_errors_and_boundary():
    rng = np.random.default_rng(0)
    for p in (1, 2):
        ok = pd.DataFrame(rng.standard_normal((3 * p + 2, 2)), columns=['a', 'b'])  # T - p = 2p + 2 usable rows: 1 dof
        assert granger(ok, lag=p, mode='pairwise', stationarity=None).df_denom.min() == 1
        with pytest.raises(InputError, match='too short'):
            granger(ok.iloc[:-1], lag=p, mode='pairwise', stationarity=None)  # T - p = 2p + 1
    d = pd.DataFrame(rng.standard_normal((100, 2)), columns=['a', 'b'])
    with pytest.raises(InputError, match='constant'):
        granger(d.assign(b=3.0))
    with pytest.raises(InputError, match='NaN'):
        granger(d.assign(a=np.r_[d.a[:-1], np.nan]))
    with pytest.raises(InputError, match='ic'):
        granger(d, ic='hqic2')
    with pytest.warns(UserWarning, match='unit root'):
        t = granger(d.assign(a=np.cumsum(d.a)))
    assert t.attrs['differenced']


def test_granger_lag_selection_finds_the_true_order():
    A = np.zeros((3, 2, 2))
    A[0] = [[0.3, 0], [0, 0.3]]
    A[2] = [[0, 0], [0.6, 0]]
    lags = [granger(simulate_var(A, 400, seed=s), maxlag=5, ic='bic', stationarity=None).attrs['lag'] for s in range(5)]
    assert np.median(lags) == 3


def test_granger_power_and_false_positive_rate():
    pw = granger_power(reps=40, T=150, lag=2, seed=100)
    assert pw[pw.true_effect].reject_raw.min() >= 0.8
    null = pw[~pw.true_effect].reject_raw
    assert null.mean() <= 0.12  # 4 null pairs x 40 reps at alpha = 0.05
    assert (pw.reject_bh <= pw.reject_raw + 1e-12).all()


def test_bh_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests
    p = np.random.default_rng(3).uniform(size=60) ** 2
    assert np.allclose(bh_adjust(p), multipletests(p, method='fdr_bh')[1])


def test_pooled_granger_finds_the_lagged_life_event_effect():
    from kelly.simulate import simulate_catalog
    cat, truth = simulate_catalog(n_artists=15, seed=5, songs_per_artist=40, sections=False, network=False)
    series = career_series(cat, columns=('life_event', 'emo_valence'))
    t = granger_pooled(series, lag=1).set_index(['cause', 'effect'])
    assert t.loc[('life_event', 'emo_valence'),
                 'significant'] and not t.loc[('emo_valence', 'life_event'), 'significant']
    assert list(granger_graph(t.reset_index()).edges) == [('life_event', 'emo_valence')]
    null, _ = simulate_catalog(n_artists=15, seed=5, songs_per_artist=40, sections=False, network=False,
                               scm={('life_event_lag1', 'valence'): 0.0})
    t0 = granger_pooled(career_series(null, columns=('life_event', 'emo_valence')),
                        lag=1).set_index(['cause', 'effect'])
    assert t0.loc[('life_event', 'emo_valence'), 'statistic'] < t.loc[('life_event', 'emo_valence'), 'statistic'] / 3
    assert not t0.loc[('life_event', 'emo_valence'), 'significant']
    fe = granger_pooled(series, lag=1, method='fixed_effects').set_index(['cause', 'effect'])
    assert fe.loc[('life_event', 'emo_valence'), 'significant']


def test_pooled_fisher_skips_sparse_effect_series():
    rng = np.random.default_rng(0)
    frames = {u: pd.DataFrame(dict(x=rng.standard_normal(40), c=(rng.random(40) < 0.05).astype(float)))
              for u in range(10)}
    t = granger_pooled(frames, lag=1, min_distinct=5).set_index(['cause', 'effect'])
    assert t.loc[('x', 'c'),
                 'units'] == 0 and np.isnan(t.loc[('x', 'c'), 'p_value']) and not t.loc[('x', 'c'), 'significant']
    assert t.loc[('c', 'x'), 'units'] > 0


def test_sachs_data_and_consensus():
    data, G = sachs()
    assert data.shape == (7466, 11) and not data.isna().any().any()
    assert G.number_of_edges() == 18 and set(G.nodes) == set(data.columns)
    assert nx.find_cycle(G)  # the consensus holds the plcg -> PIP2 -> PIP3 -> plcg feedback loop: not a DAG


def _textbook_pc_skeleton(X:np.ndarray, alpha:float) -> set:
    """PC-stable's skeleton phase as Kalisch & Buehlmann (2007) state it: Fisher z on partial correlations from the
    inverse correlation matrix."""
    from scipy.stats import norm
    n, p = X.shape
    C = np.corrcoef(X, rowvar=False)
    adj = {i: set(range(p)) - {i} for i in range(p)}
    def p_value(i, j, S):
        P = np.linalg.inv(C[np.ix_([i, j, *S], [i, j, *S])])
        r = np.clip(-P[0, 1] / math.sqrt(P[0, 0] * P[1, 1]), -1 + 1e-12, 1 - 1e-12)
        return 2 * norm.sf(abs(math.sqrt(n - len(S) - 3) * math.atanh(r)))
    level = 0
    while any(len(a) - 1 >= level for a in adj.values()):
        frozen = {i: set(a) for i, a in adj.items()}  # "stable": the neighbourhoods of the level's start
        for i in range(p):
            for j in sorted(frozen[i]):
                if j in adj[i] and any(p_value(i, j, S) > alpha
                                       for S in itertools.combinations(sorted(frozen[i] - {j}), level)):
                    adj[i].discard(j)
                    adj[j].discard(i)
        level += 1
    return {frozenset((i, j)) for i in adj for j in adj[i]}


def test_pc_on_sachs_equals_two_independent_implementations():
    "On real data, where borderline tests abound, kelly's skeleton equals a textbook PC-stable and pgmpy's PC-stable."
    from pgmpy.estimators import PC as PgmpyPC
    data, _ = sachs()
    X = np.log(data.clip(lower=0.01)).iloc[:1500]
    names = list(X.columns)
    ours = {frozenset(e) for e in pc(X, alpha=0.01).edges}
    textbook = {frozenset((names[i], names[j])) for i, j in _textbook_pc_skeleton(X.to_numpy(), 0.01)}
    assert ours == textbook and 5 < len(ours) < 40
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        skeleton, _ = PgmpyPC((X - X.mean()) / X.std()).estimate(variant='stable', ci_test='pearsonr',
                                                                 significance_level=0.01,
                                                               return_type='skeleton', max_cond_vars=len(names),
                                                                 show_progress=False)
    assert ours == {frozenset(e) for e in skeleton.edges}


def test_benchmark_records(monkeypatch):
    "Each record holds the median time_call measured, of PC on data with the number of variables its case names."
    import kelly.career.causal as causal
    from kelly.bench import run_benchmarks
    timed = []
    def fake_time_call(fn, repeat=5, warmup=1):  # a clock that answers 0.25 s, then 0.5 s
        timed.append(fn().number_of_nodes())
        return dict(median=0.25 * len(timed), min=0.0, repeat=repeat)
    monkeypatch.setattr(causal, 'time_call', fake_time_call)
    recs = run_benchmarks('causal', size='tiny')
    assert timed == [5, 10]
    assert [(r['case'], r['metric'], r['value'], r['unit']) for r in recs] == [
        ('pc_fisherz_5vars_n200', 'median_time', 0.25, 's'), ('pc_fisherz_10vars_n200', 'median_time', 0.5, 's')]


def test_pc_defaults_to_causal_learns_level_and_it_scores_better_on_small_samples():
    from kelly.career.causal import alpha_study
    d = random_linear_scm(5, seed=0).sample(200, seed=0)
    assert pc(d).graph['alpha'] == 0.05
    tab = alpha_study((0.01, 0.05), n_vars=10, ns=(100,), seeds=range(10))
    by = tab.groupby('alpha').mean(numeric_only=True)
    assert len(tab) == 20 and by.loc[0.05, 'shd_cpdag'] < by.loc[0.01, 'shd_cpdag']
    assert by.loc[0.05, 'skeleton_recall'] > by.loc[0.01, 'skeleton_recall']
