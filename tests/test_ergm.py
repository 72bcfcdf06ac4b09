"""Tests of kelly.career.ergm: statistics and change statistics against brute-force recounts, the sampler against exact
enumeration, MCMC-MLE against the exact MLE of a small graph."""
import itertools, math, warnings

import networkx as nx
import numpy as np
import pytest

from kelly.career.ergm import (ERGM, TERGM, Chain, DegenerateModelError, DegeneracyWarning, _check_degeneracy,
                               _neighbour_lists, as_network, bench_ergm, change_statistics, florentine, parse_terms,
                               snapshot_stats, statistics)

DIRECTED_TERMS = ['edges', 'mutual', 'ttriple', 'nodematch(g)', 'gwesp(0.7)', 'gwesp(0)', 'gwesp(2)', 'stability',
                  'formation']
UNDIRECTED_TERMS = ['edges', 'triangle', 'nodematch(g)', 'gwesp(0.4)', 'gwesp(0)', 'gwesp(1.5)', 'stability',
                    'formation']


def _random_toggle(A, rng, directed):
    "A random dyad (i < j when undirected) and A with that tie toggled."
    i, j = rng.choice(len(A), 2, replace=False)
    if not directed and i > j:
        i, j = j, i
    B = A.copy()
    B[i, j] = 1 - B[i, j]
    if not directed:
        B[j, i] = B[i, j]
    return i, j, B


def brute(A, terms, directed, attr, prev):
    "Each statistic recounted by loops over pairs and triples."
    n = len(A)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j and (directed or i < j)]
    out = []
    for k, t in enumerate(terms):
        c = t.kind
        if c == 'edges':
            v = sum(A[i, j] for i, j in pairs)
        elif c == 'mutual':
            v = sum(A[i, j] * A[j, i] for i, j in pairs if i < j)
        elif c == 'triangle':
            v = sum(A[i, j] * A[j, l] * A[i, l] for i, j, l in itertools.combinations(range(n), 3))
        elif c == 'ttriple':
            v = sum(A[i, j] * A[j, l] * A[i, l] for i, j, l in itertools.permutations(range(n), 3))
        elif c == 'nodematch':
            v = sum(A[i, j] * (attr[k][i] == attr[k][j]) for i, j in pairs)
        elif c == 'gwesp':
            r = 1 - math.exp(-t.decay)
            v = sum(math.exp(t.decay) * (1 - r ** sum(A[i, l] * A[l, j] for l in range(n) if l not in (i, j)))
                    for i, j in pairs if A[i, j])
        elif c == 'stability':
            v = sum(A[i, j] * prev[i, j] for i, j in pairs)
        elif c == 'formation':
            v = sum(A[i, j] * (1 - prev[i, j]) for i, j in pairs)
        out.append(v)
    return np.array(out, float)


def random_graph(rng, n, p, directed):
    A = (rng.random((n, n)) < p).astype(np.int32)
    if not directed:
        A = np.triu(A, 1)
        A = A + A.T
    np.fill_diagonal(A, 0)
    return A


@pytest.mark.parametrize('directed', [True, False])
def test_statistics_and_change_statistics_match_brute_force(directed):
    rng = np.random.default_rng(11 + directed)
    terms = parse_terms(DIRECTED_TERMS if directed else UNDIRECTED_TERMS, directed, temporal=True)
    for _ in range(40):
        n = int(rng.integers(2, 9))
        A, P = random_graph(rng, n, rng.uniform(0.1, 0.8), directed), random_graph(rng, n, 0.4, directed)
        attr = np.tile(rng.integers(0, 3, n), (len(terms), 1))
        g = brute(A, terms, directed, attr, P)
        np.testing.assert_allclose(statistics(A, terms, directed, attr, P), g, atol=1e-9)
        for _ in range(6):
            i, j, B = _random_toggle(A, rng, directed)
            np.testing.assert_allclose(change_statistics(A, terms, directed, i, j, attr, P),
                                       brute(B, terms, directed, attr, P) - g, atol=1e-9)


def test_statistics_match_networkx_counts():
    G = nx.gnp_random_graph(25, 0.25, seed=3)
    A = nx.to_numpy_array(G, dtype=int)
    e, tri = statistics(A, parse_terms(['edges', 'triangle'], False), False)
    assert e == G.number_of_edges() and tri == sum(nx.triangles(G).values()) / 3


@pytest.mark.parametrize('directed', [True, False])
def test_chain_keeps_its_state_consistent(directed):
    G = nx.gnp_random_graph(15, 0.2, seed=2, directed=directed)
    P = nx.gnp_random_graph(15, 0.2, seed=5, directed=directed)
    nx.set_node_attributes(G, {v: v % 3 for v in G}, 'g')
    net = as_network(G, ['g'], prev=P)
    terms = parse_terms(DIRECTED_TERMS if directed else UNDIRECTED_TERMS, directed, temporal=True)
    ch = Chain(net, terms, seed=1)
    theta = np.random.default_rng(0).normal(0, 0.3, len(terms))
    theta[0] = -1.0
    S = 2 if directed else 1
    for _ in range(5):
        ch.sample(theta, 20, 37, 0)
        np.testing.assert_allclose(ch.g, statistics(ch.A, terms, directed, ch.attr, ch.prev), atol=1e-8)
        assert (ch.T2 == ch.A @ ch.A).all()
        if not directed:
            assert (ch.A == ch.A.T).all()
        nbr, deg, _ = _neighbour_lists(ch.A)
        assert (deg[:S] == ch.deg[:S]).all()
        for s in range(S):
            for u in range(15):
                assert set(ch.nbr[s, u, :ch.deg[s, u]]) == set(nbr[s, u, :deg[s, u]])
        ties = {(int(a), int(b)) for a, b in zip(ch.ei[:ch.ne[0]], ch.ej[:ch.ne[0]])}
        assert ties == {(int(a), int(b)) for a, b in zip(*np.nonzero(ch.A if directed else np.triu(ch.A)))}


def all_graphs(n, directed):
    "Every adjacency matrix on n nodes."
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j and (directed or i < j)]
    for bits in itertools.product((0, 1), repeat=len(pairs)):
        A = np.zeros((n, n), np.int32)
        for (i, j), b in zip(pairs, bits):
            A[i, j] = b
            if not directed:
                A[j, i] = b
        yield A


@pytest.mark.parametrize('directed,n,names,theta', [(False, 4, ['edges', 'triangle', 'gwesp(0.5)'], [-0.5, 0.4, -0.3]),
                                                    (True, 3, ['edges', 'mutual', 'ttriple', 'gwesp(0.5)'],
                                                     [-1.0, 1.2, 0.3, 0.2])])
def test_sampler_matches_exact_enumeration(directed, n, names, theta):
    terms = parse_terms(names, directed)
    S = np.array([statistics(A, terms, directed) for A in all_graphs(n, directed)])
    w = np.exp(S @ theta)
    w /= w.sum()
    exact = w @ S
    ch = Chain(as_network(nx.empty_graph(n, nx.DiGraph if directed else nx.Graph)), terms, seed=4)
    draws = ch.sample(theta, 20000, 10, 1000)
    se = draws.std(0) / math.sqrt(20000) * 3  # generous for autocorrelation
    assert np.all(np.abs(draws.mean(0) - exact) < 4 * se + 1e-9), (draws.mean(0), exact)


def test_mcmc_mle_matches_exact_mle_of_a_small_graph():
    from scipy.optimize import minimize
    G = nx.Graph([(0, 1), (1, 2), (0, 2), (2, 3), (3, 4), (4, 5), (3, 5)])
    terms = parse_terms(['edges', 'triangle'], False)
    # the exact likelihood: kappa(theta) summed over all 2^15 graphs on 6 nodes
    obs = statistics(nx.to_numpy_array(G, dtype=int), terms, False)
    S = np.array([statistics(A, terms, False) for A in all_graphs(6, False)])
    vals, counts = np.unique(S, axis=0, return_counts=True)
    nll = lambda t: -(obs @ t - np.log(counts @ np.exp(vals @ t)))
    exact = minimize(nll, np.zeros(2), method='BFGS').x
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DegeneracyWarning)
        m = ERGM(['edges', 'triangle'], seed=0).fit(G)
    assert np.all(np.abs(m.coef_ - exact) < 0.25 * m.stderr_), (m.coef_, exact, m.stderr_)


def test_florentine_edges_only_is_exact_and_triangle_near_statnet():
    G = florentine()
    assert ERGM(['edges']).fit(G).coef_[0] == pytest.approx(math.log(20 / 100), abs=1e-9)
    tab = ERGM(['edges', 'triangle'], seed=3).fit(G).summary()
    assert abs(tab.estimate['edges'] + 1.69) < 0.5 * 0.36 and abs(tab.estimate['triangle'] - 0.19) < 0.5 * 0.60
    assert tab.std_error['edges'] == pytest.approx(0.36, rel=0.15) and tab.std_error['triangle'] == pytest.approx(0.60,
                                                                                                                  rel=0.15)
    assert (tab.mcmc_se < 0.2 * tab.std_error).all()


def test_tergm_dyad_independent_is_closed_form():
    rng = np.random.default_rng(1)
    snaps = [nx.gnp_random_graph(30, 0.1, seed=0)]
    for t in range(2):
        G = nx.Graph()
        G.add_nodes_from(range(30))
        G.add_edges_from(e for e in snaps[-1].edges() if rng.random() < 0.6)
        G.add_edges_from((int(a), int(b)) for a, b in rng.integers(0, 30, (25, 2)) if a != b)
        snaps.append(G)
    tab = snapshot_stats(snaps)
    kept, formed = tab.stability.iloc[1:].sum(), tab.formation.iloc[1:].sum()
    old = tab.edges.iloc[:-1].sum()
    D = 30 * 29 / 2
    m = TERGM(['stability', 'formation']).fit(snaps)
    assert m.coef_[0] == pytest.approx(math.log(kept / (old - kept)), abs=1e-6)
    assert m.coef_[1] == pytest.approx(math.log(formed / (2 * D - old - formed)), abs=1e-6)


def test_tergm_by_mcmc_runs_on_directed_snapshots():
    G0 = nx.gnp_random_graph(25, 0.08, seed=1, directed=True)
    rng = np.random.default_rng(2)
    G1 = nx.DiGraph()
    G1.add_nodes_from(G0)
    G1.add_edges_from(e for e in G0.edges() if rng.random() < 0.7)
    G1.add_edges_from((v, u) for u, v in list(G1.edges())[:8])
    G1.add_edges_from((int(a), int(b)) for a, b in rng.integers(0, 25, (10, 2)) if a != b)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DegeneracyWarning)
        m = TERGM(['stability', 'formation', 'mutual'], sample_size=256).fit([G0, G1])
    tab = m.summary()
    assert list(tab.index) == ['stability', 'formation', 'mutual'] and np.isfinite(tab.estimate).all()
    assert tab.estimate['mutual'] > 0  # reciprocated arcs were added on purpose
    sims = m.simulate(2)
    assert len(sims) == 1 and len(sims[0]) == 2 and isinstance(sims[0][0], nx.DiGraph)


def test_errors_name_the_problem():
    with pytest.raises(DegenerateModelError, match='none of it'):
        ERGM(['edges', 'mutual']).fit(nx.DiGraph([(0, 1), (1, 2)]))
    with pytest.raises(ValueError, match='directed'):
        ERGM(['edges', 'mutual']).fit(nx.Graph([(0, 1)]))
    with pytest.raises(ValueError, match='list'):
        TERGM().fit(nx.DiGraph([(0, 1)]))
    with pytest.raises(ValueError, match='mixed'):
        TERGM(['stability']).fit([nx.Graph([(0, 1)]), nx.DiGraph([(0, 1)])])
    with pytest.raises(ValueError, match='same nodes'):
        TERGM(['stability']).fit([nx.Graph([(0, 1)]), nx.Graph([(0, 2)])])
    with pytest.raises(ValueError, match='genre'):
        ERGM(['edges', 'homophily']).fit(nx.Graph([(0, 1), (1, 2)]))
    with pytest.raises(DegenerateModelError, match='nearly complete'):
        _check_degeneracy(np.full((50, 1), 120.0), np.array([20.0]), ['edges'], 120, 20, 'test')


def test_degenerate_triangle_model_simulates_near_complete_graphs():
    m = ERGM(['edges', 'triangle']).prepare(florentine())
    low = [g.number_of_edges() for g in m.simulate(10, theta=[-1.69, 0.19], seed=0)]
    high = [g.number_of_edges() for g in m.simulate(10, theta=[-1.69, 1.5], seed=0)]
    assert np.mean(low) < 40 and np.mean(high) > 100


def test_gof_table_shapes():
    m = ERGM(['edges', 'gwesp(0.5)'], seed=0, sample_size=256).fit(florentine())
    g = m.gof(20)
    assert set(g.statistic) == {'degree', 'esp', 'distance'} and g.p_value.between(0, 1).all()
    assert (g.lo95 <= g.hi95).all()


def test_bench_tiny():
    recs = bench_ergm(size='tiny')
    assert [r['case'] for r in recs] == ['florentine edges+triangle', 'directed N=100']
    assert all(r['metric'] == 'seconds' and r['value'] > 0 for r in recs)
    with pytest.raises(ValueError):
        bench_ergm(size='huge')


def test_coverage_helpers_return_one_row_per_fit_and_term():
    from kelly.career.ergm import coverage_study, coverage_summary, gwesp_coverage
    st = coverage_study(1, n_artists=20, n_periods=2, seed=3, sample_size=128, network_steps=8000)
    assert set(st.model) == {'ERGM', 'TERGM'}
    ok = st[st.failed == '']
    assert ok.covered.isin([0.0, 1.0]).all() and np.isfinite(ok.truth).all()
    gw = gwesp_coverage(1, n_nodes=30, seed=1, sample_size=128)
    summ = coverage_summary(gw)
    assert list(summ.index.get_level_values('term')) == ['edges', 'mutual', 'nodematch.genre', 'gwesp.fixed.0.5']
    assert summ.coverage.between(0, 1).all()


# ---- statnet's covariate and degree terms (issue 21) ----
from hypothesis import given, settings, strategies as st

from kelly.career.ergm import Term

FLO_WEALTH = dict(Acciaiuoli=10, Albizzi=36, Barbadori=55, Bischeri=44, Castellani=20, Ginori=32, Guadagni=8,
                  Lamberteschi=42, Medici=103, Pazzi=48, Peruzzi=49, Pucci=3, Ridolfi=27, Salviati=10, Strozzi=146,
                  Tornabuoni=48)  # statnet's flomarriage %v% 'wealth'


def brute_new(A, t, directed, f, x, W):
    "One new term recounted by loops over pairs, nodes and subsets of neighbours (no matrix algebra)."
    n = len(A)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j and (directed or i < j) and A[i, j]]
    nbrs = [[j for j in range(n) if A[i, j]] for i in range(n)]
    in_nbrs = [[i for i in range(n) if A[i, j]] for j in range(n)]
    r = 1 - math.exp(-t.decay)
    if t.kind == 'nodecov':
        return sum(x[i] + x[j] for i, j in pairs)
    if t.kind == 'absdiff':
        return sum(abs(x[i] - x[j]) for i, j in pairs)
    if t.kind == 'edgecov':
        return sum(W[i, j] for i, j in pairs)
    if t.kind == 'nodefactor':
        return sum(int(f[i] == t.level) + int(f[j] == t.level) for i, j in pairs)
    if t.kind == 'nodematch':
        return sum(f[i] == t.level and f[j] == t.level for i, j in pairs)
    if t.kind == 'degree':
        return sum(len(nb) == t.k for nb in nbrs)
    if t.kind == 'kstar':
        return sum(len(list(itertools.combinations(nb, t.k))) for nb in nbrs)
    if t.kind == 'ostar':
        return sum(len(list(itertools.combinations(nb, t.k))) for nb in nbrs)
    if t.kind == 'istar':
        return sum(len(list(itertools.combinations(nb, t.k))) for nb in in_nbrs)
    if t.kind == 'gwdegree':
        return sum(math.exp(t.decay) * (1 - r ** len(nb)) for nb in nbrs)
    if t.kind == 'gwdsp':
        sp = [len(set(nbrs[i]) & set(nbrs[j])) for i, j in itertools.combinations(range(n), 2)]
        return sum(math.exp(t.decay) * (1 - r ** s) for s in sp)
    raise AssertionError(t.kind)


def new_terms(directed):
    common = [Term('nodecov', attr='x'), Term('absdiff', attr='x'), Term('edgecov', attr='w')]
    common += [Term('nodefactor', attr='f', level=l) for l in (1, 2)]
    common += [Term('nodematch', attr='f', diff=True, level=l) for l in (0, 1, 2)]
    if directed:
        return common + [Term('istar', k=k) for k in (1, 2, 3)] + [Term('ostar', k=k) for k in (1, 2)]
    return common + [Term('degree', k=k) for k in (0, 1, 2, 3)] + [Term('kstar', k=k) for k in (1, 2, 3)] + [
        Term('gwdegree', decay=a) for a in (0.0, 0.5, 1.7)] + [Term('gwdsp', decay=a) for a in (0.0, 0.4, 2.0)]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 8), p=st.floats(0.05, 0.95), directed=st.booleans())
def test_new_terms_statistics_and_change_statistics_match_brute_force(seed, n, p, directed):
    rng = np.random.default_rng(seed)
    terms = new_terms(directed)
    A = random_graph(rng, n, p, directed)
    f, x = rng.integers(0, 3, n), np.round(rng.normal(0, 2, n), 2)
    W = rng.integers(0, 4, (n, n)).astype(float)
    if not directed:
        W = np.triu(W, 1) + np.triu(W, 1).T
    K = len(terms)
    attr, cov, WW = np.tile(f, (K, 1)), np.tile(x, (K, 1)), np.tile(W, (K, 1, 1))
    g = np.array([brute_new(A, t, directed, f, x, W) for t in terms], float)
    np.testing.assert_allclose(statistics(A, terms, directed, attr, None, cov, WW), g, atol=1e-9)
    for _ in range(4):
        i, j, B = _random_toggle(A, rng, directed)
        gB = np.array([brute_new(B, t, directed, f, x, W) for t in terms], float)
        np.testing.assert_allclose(change_statistics(A, terms, directed, i, j, attr, None, cov, WW), gB - g, atol=1e-9)


@pytest.mark.parametrize('directed', [True, False])
def test_chain_keeps_new_statistics_consistent(directed):
    G = nx.gnp_random_graph(14, 0.2, seed=7, directed=directed)
    rng = np.random.default_rng(3)
    nx.set_node_attributes(G, {v: int(rng.integers(0, 3)) for v in G}, 'f')
    nx.set_node_attributes(G, {v: float(rng.normal()) for v in G}, 'x')
    W = rng.integers(0, 3, (14, 14)).astype(float)
    G.graph['w'] = W if directed else np.triu(W, 1) + np.triu(W, 1).T
    names = ['edges', 'nodecov(x)', 'absdiff(x)', 'edgecov(w)', 'nodefactor(f)', 'nodematch(f, diff=True)']
    names += ['istar(2)', 'ostar(2)'] if directed else ['degree(1)', 'kstar(2)', 'gwdegree(0.7)', 'gwdsp(0.3)']
    m = ERGM(names).prepare(G)
    ch = Chain(m.nets_[0], m.terms_, seed=1)
    theta = np.random.default_rng(0).normal(0, 0.1, len(m.terms_))
    theta[0] = -1.5
    for _ in range(4):
        ch.sample(theta, 10, 53, 0)
        np.testing.assert_allclose(ch.g, statistics(ch.A, m.terms_, directed, ch.attr, ch.prev, ch.cov, ch.W),
                                   atol=1e-8)


@pytest.mark.parametrize('names,theta', [(['edges', 'gwdegree(0.5)', 'gwdsp(0.5)'], [-0.3, -0.6, 0.2]),
                                         (['edges', 'kstar(2)', 'degree(1)'], [-0.4, 0.15, 0.5])])
def test_sampler_matches_exact_enumeration_for_degree_terms(names, theta):
    terms = parse_terms(names, False)
    S = np.array([statistics(A, terms, False) for A in all_graphs(5, False)])
    w = np.exp(S @ theta)
    w /= w.sum()
    ch = Chain(as_network(nx.empty_graph(5)), terms, seed=2)
    draws = ch.sample(theta, 20000, 10, 1000)
    se = draws.std(0) / math.sqrt(20000) * 3
    assert np.all(np.abs(draws.mean(0) - w @ S) < 4 * se + 1e-9), (draws.mean(0), w @ S)


def test_flomarriage_nodecov_wealth_matches_statnet():
    G = florentine()
    nx.set_node_attributes(G, FLO_WEALTH, 'wealth')
    tab = ERGM(['edges', 'nodecov(wealth)']).fit(G).summary()
    # statnet's tutorial: edges -2.5949 (0.5361), nodecov.wealth 0.0105 (0.0047); within 0.1 SE
    assert abs(tab.estimate['edges'] + 2.5949) < 0.1 * 0.5361 and abs(tab.estimate['nodecov.wealth']
                                                                      - 0.0105) < 0.1 * 0.0047
    assert tab.std_error['edges'] == pytest.approx(0.5361, abs=1e-3)
    assert tab.std_error['nodecov.wealth'] == pytest.approx(0.0047, abs=1e-4)


def test_dyad_independent_covariate_model_is_a_logistic_regression():
    import statsmodels.api as sm
    G = florentine()
    nx.set_node_attributes(G, FLO_WEALTH, 'wealth')
    nx.set_node_attributes(G, {v: 'rich' if FLO_WEALTH[v] > 40 else 'poor' for v in G}, 'class')
    rng = np.random.default_rng(0)
    past = nx.Graph()
    past.add_edges_from((u, v) for u, v in itertools.combinations(sorted(G), 2) if rng.random() < 0.2)
    G.graph['past'] = past
    X, y = [], []
    for u, v in itertools.combinations(sorted(G), 2):
        cu, cv = wealth_class(u), wealth_class(v)
        X.append([1, abs(FLO_WEALTH[u] - FLO_WEALTH[v]), past.has_edge(u, v), cu == cv == 'poor', cu == cv == 'rich',
                  (cu == 'rich') + (cv == 'rich')])
        y.append(G.has_edge(u, v))
    X, y = np.array(X, float), np.array(y, float)
    for names, cols in ((['edges', 'absdiff(wealth)', 'edgecov(past)', 'nodematch(class, diff=True)'], [0, 1, 2, 3, 4]),
                        (['edges', 'absdiff(wealth)', 'nodefactor(class)'], [0, 1, 5])):
        m = ERGM(names).fit(G)
        ref = sm.GLM(y, X[:, cols], family=sm.families.Binomial()).fit()
        np.testing.assert_allclose(m.coef_, ref.params, atol=1e-6)
        np.testing.assert_allclose(m.stderr_, ref.bse, rtol=1e-4)
    assert [t.label for t in m.terms_] == ['edges', 'absdiff.wealth', 'nodefactor.class.rich']


def wealth_class(v): return 'rich' if FLO_WEALTH[v] > 40 else 'poor'


def test_kstar_model_near_statnet_and_gwdegree_near_exact_mle():
    from scipy.optimize import minimize
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DegeneracyWarning)
        tab = ERGM(['edges', 'kstar(2)'], seed=1).fit(florentine()).summary()
    # statnet's tests/estflo.R: MCMC-MLE edges -1.6223, kstar2 0.006467, from the MPLE -1.66463, 0.01181
    np.testing.assert_allclose(tab.mple, [-1.66463, 0.01181], atol=1e-4)
    assert abs(tab.estimate['edges'] + 1.6223) < 0.5 * tab.std_error['edges']
    assert abs(tab.estimate['kstar2'] - 0.006467) < 0.5 * tab.std_error['kstar2']
    G = nx.Graph([(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (4, 5)])
    terms = parse_terms(['edges', 'gwdegree(0.5)'], False)
    obs = statistics(nx.to_numpy_array(G, nodelist=range(6), dtype=int), terms, False)
    vals, counts = np.unique(np.array([statistics(A, terms, False) for A in all_graphs(6, False)]), axis=0,
                             return_counts=True)
    exact = minimize(lambda t: -(obs @ t - np.log(counts @ np.exp(vals @ t))), np.zeros(2), method='BFGS').x
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DegeneracyWarning)
        m = ERGM(['edges', 'gwdegree(0.5)'], seed=0).fit(G)
    assert np.all(np.abs(m.coef_ - exact) < 0.25 * m.stderr_), (m.coef_, exact, m.stderr_)


def test_covariate_errors_name_the_problem():
    G = nx.florentine_families_graph()
    with pytest.raises(ValueError, match="'wealth'"):
        ERGM(['edges', 'nodecov(wealth)']).fit(G)
    with pytest.raises(ValueError, match='past'):
        ERGM(['edges', 'edgecov(past)']).fit(G)
    nx.set_node_attributes(G, 'x', 'same')
    with pytest.raises(ValueError, match='same'):
        ERGM(['edges', 'nodefactor(same)']).fit(G)
    with pytest.raises(ValueError, match='directed'):
        ERGM(['edges', 'istar(2)']).fit(G)


# ---- issue 25: one state object for the sampler, methods on their class ----
def test_sampler_takes_a_state_and_a_model_and_continues_in_place():
    from kelly.career.ergm import GraphState, ModelArrays, _sample
    ch = Chain(as_network(nx.gnp_random_graph(12, 0.2, seed=2, directed=True)), parse_terms(['edges', 'mutual'], True))
    assert isinstance(ch.state, GraphState) and isinstance(ch.model, ModelArrays)
    draws, acceptance = _sample(ch.state, ch.model, np.array([-1.0, 0.5]), 5, 50, 0, 1)
    assert draws.shape == (5, 2) and 0 < acceptance <= 1
    after = statistics(ch.A, ch.terms, True, ch.attr, ch.prev, ch.cov, ch.W)
    assert np.allclose(after, ch.g + draws[-1]) and ch.ne[0] == ch.A.sum()   # the chain's own arrays moved
    assert ERGM.gof.__qualname__ == 'ERGM.gof' and 'gof' in vars(ERGM)


# ---- issue 24: the per-period map, serial against a local cluster ----
def test_ergm_by_period_on_two_local_workers_equals_the_serial_fit():
    import pandas as pd
    from kelly.career.ergm import ergm_by_period, simulator_networks
    from kelly.parallel import dask_client
    snaps, _, _ = simulator_networks(16, seed=4, n_periods=3, network_steps=2000)
    serial = ergm_by_period(snaps, ('edges', 'mutual'), scheduler='sync', seed=1, sample_size=64)
    assert list(serial.index.get_level_values('period').unique()) == [0, 1, 2]
    with dask_client('local', workers=2) as client:
        local = ergm_by_period(snaps, ('edges', 'mutual'), scheduler=client, seed=1, sample_size=64)
    pd.testing.assert_frame_equal(local, serial, check_exact=True)
