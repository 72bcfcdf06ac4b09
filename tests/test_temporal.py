"Tests of kelly.career.temporal that are awkward inside the notebook."
import numpy as np
import pandas as pd
import pytest

from kelly.core import InputError
from kelly.bench import run_benchmarks
from kelly.career.temporal import (VAD, AlbumCoherence, CareerGP, SectionModel, career_table, ppca_coherence,
                                   profile_interval, reml_nll)
from kelly.simulate import section_basis, simulate_catalog


def _sections(mu, A, kinds, song='s0'):
    eta = mu[None] + section_basis(kinds) @ A.T
    return pd.DataFrame(dict(song_id=song, index=np.arange(len(kinds)), kind=kinds, valence=eta[:, 0],
                             arousal=eta[:, 1], dominance=eta[:, 2]))


def test_section_model_recovers_noiseless_coefficients_exactly():
    rng = np.random.default_rng(0)
    kinds = ['intro', 'verse', 'chorus', 'verse', 'chorus', 'bridge', 'chorus', 'outro']
    truth = {f's{i}': (rng.normal(size=3), rng.normal(size=(3, 3))) for i in range(5)}
    secs = pd.concat([_sections(mu, A, kinds, s) for s, (mu, A) in truth.items()], ignore_index=True)
    secs.loc[0, 'valence'] += 1e-3   # a little residual so that Sigma_eps is defined
    fit = SectionModel().fit(secs)
    for s, (mu, A) in truth.items():
        c = fit.coef_[fit.coef_.song_id == s].pivot(index='dimension', columns='term', values='estimate').loc[list(VAD)]
        tol = 1e-2 if s == 's0' else 1e-9
        np.testing.assert_allclose(c['baseline'], mu, atol=tol)
        np.testing.assert_allclose(c[['chorus', 'bridge', 'arc']].to_numpy(), A, atol=tol)


def test_section_model_drops_absent_basis_functions():
    kinds = ['verse', 'verse', 'bridge', 'verse', 'verse', 'bridge']   # no chorus
    rng = np.random.default_rng(1)
    secs = _sections(rng.normal(size=3), rng.normal(size=(3, 3)), kinds)
    secs[list(VAD)] += 0.01 * rng.normal(size=(len(kinds), 3))
    fit = SectionModel().fit(secs)
    assert 'chorus' not in set(fit.coef_.term) and 'bridge' in set(fit.coef_.term)


def test_coherence_is_scale_free_and_bounded():
    rng = np.random.default_rng(2)
    for _ in range(20):
        M = rng.normal(size=(3, 3))
        C = M @ M.T
        for r in range(3):
            c = ppca_coherence(C, r)
            assert 0 <= c <= 1 + 1e-12
            assert abs(ppca_coherence(7.0 * C, r) - c) < 1e-9


def test_album_coherence_rejects_tables_without_albums():
    with pytest.raises(InputError, match='album_id'):
        AlbumCoherence().fit(pd.DataFrame(dict(valence=[0.0, 1.0])))


def test_reml_is_invariant_to_a_shift_in_the_mean():
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 10, 25))
    Y = rng.normal(size=(25, 3))
    X = np.ones((25, 1))
    th = np.log([0.3, 2.0, 0.2])
    assert abs(reml_nll(th, t, Y, X)[0] - reml_nll(th, t, Y + 5.0, X)[0]) < 1e-6


def test_profile_interval_ends_are_where_an_independent_profile_crosses():
    """Each end of the length-scale's profile interval, re-profiled by Nelder-Mead from several starts, sits
    chi2_1(0.9)/2 above the minimum."""
    from scipy import optimize, stats
    cat, _ = simulate_catalog(n_artists=1, seed=5, songs_per_artist=40, change_rate=0.0, network=False, sections=False)
    g = career_table(cat)
    t, Y, X = (
        g.t.to_numpy(float), g[['emo_valence', 'emo_arousal', 'emo_dominance']].to_numpy(float), np.ones((len(g), 1)))
    nll = lambda th: reml_nll(th, t, Y, X)
    best = min((optimize.minimize(nll, np.log([0.2, l0, 0.1]), jac=True, method='L-BFGS-B') for l0 in (1.0, 3.0, 10.0)),
               key=lambda r: r.fun)
    bounds = [(-8.0, 3.0), (np.log(np.ptp(t) / 50), np.log(10 * np.ptp(t))), (-8.0, 3.0)]
    lo, hi = profile_interval(nll, best.x, 1, bounds, level=0.9, step=0.2)
    assert lo < best.x[1] < hi
    crit = 0.5 * stats.chi2.ppf(0.9, 1)
    interior = [end for end in (lo, hi) if end not in bounds[1]]
    assert interior, 'both ends at the bounds: nothing to check'
    for end in interior:
        rise = min(optimize.minimize(lambda u: nll(np.array([u[0], end, u[1]]))[0], x0, method='Nelder-Mead',
                                     options=dict(xatol=1e-8, fatol=1e-10, maxiter=4000)).fun
                   for x0 in ([best.x[0], best.x[2]], [best.x[0] + 0.5, best.x[2] - 0.3],
                              [best.x[0] - 0.5, best.x[2] + 0.3])) - best.fun
        assert abs(rise - crit) < 2e-3, (end, rise, crit)


def test_career_gp_is_deterministic_and_checks_its_input():
    cat, _ = simulate_catalog(n_artists=3, seed=4, songs_per_artist=20, change_rate=0.0, network=False, sections=False)
    tab = career_table(cat)
    a, b = CareerGP().fit(tab).hyper_, CareerGP().fit(tab).hyper_
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(InputError, match='missing columns'):
        CareerGP().fit(tab.drop(columns='t'))
    with pytest.raises(InputError, match='prior'):
        CareerGP(prior='strong').fit(tab)


def test_bench_tiny_returns_the_issue_metrics():
    recs = run_benchmarks('temporal', size='tiny')
    metrics = {r['metric'] for r in recs}
    assert {'nuts_fit_time', 'advi_fit_time', 'nuts_over_advi', 'nuts_ess_per_second', 'nuts_sigma_coverage',
            'nuts_lengthscale_coverage'} <= metrics
    assert all(r['value'] > 0 for r in recs if r['unit'] != 'share')
    assert all(r['value'] in (0, 1 / 3, 2 / 3, 1) for r in recs if r['unit'] == 'share')   # covered artists out of 3
    assert {r['case'] for r in recs} == {'3 artists x 20 songs'}


def test_hierarchical_model_gradient_matches_finite_differences():
    from kelly.career.temporal import HierarchicalCareerGP
    cat, _ = simulate_catalog(n_artists=3, seed=5, songs_per_artist=12, change_rate=0.0, network=False, sections=False)
    tab = career_table(cat)
    tab = tab[~((tab.artist_id == tab.artist_id.iloc[0]) & (tab.position >= 9))]   # unequal songs: padding is exercised
    model = HierarchicalCareerGP(m=8).build_model(tab)
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    rng = np.random.default_rng(6)
    point = {k: v + 0.3 * rng.normal(size=np.shape(v)) for k, v in model.initial_point().items()}
    grad = dlogp(point)
    names = [v.name for v in model.value_vars]
    flat = np.concatenate([np.ravel(point[k]) for k in names])
    def f(x):
        out, i = {}, 0
        for k in names:
            size = np.size(point[k])
            out[k] = x[i:i + size].reshape(np.shape(point[k]))
            i += size
        return logp(out)
    for j in rng.choice(len(flat), 25, replace=False):
        e = np.zeros_like(flat)
        e[j] = 1e-5
        assert abs((f(flat + e) - f(flat - e)) / 2e-5 - grad[j]) < 1e-4 * max(1.0, abs(grad[j]))


def test_hierarchical_weights_follow_the_exact_conditional():
    from kelly.career.temporal import HierarchicalCareerGP
    cat, _ = simulate_catalog(n_artists=2, seed=7, songs_per_artist=15, change_rate=0.0, network=False, sections=False)
    tab = career_table(cat)
    hg = HierarchicalCareerGP(method='advi', advi_iter=200, draws=5, m=8, seed=1).fit(tab)
    w = hg.weights(5)
    assert w.shape == (5, 2, 8, 3) and np.isfinite(w).all()
    # the conditional mean of the GP at the songs equals the exact GP posterior mean for the same draw (weights averaged
    # over many conditional draws)
    psd, a, s = hg._draws('sqrt_psd', 1)[0], hg._draws('intercept', 1)[0], hg._draws('noise', 1)[0]
    bi = hg._draws('beta_artist', 1)[0]
    d = hg._data
    hg.idata_ = hg.idata_.isel(draw=[0])
    many = np.stack([HierarchicalCareerGP.weights(hg.set_params(seed=k), 1)[0] for k in range(400)]).mean(0)
    for i in range(2):
        k = int(d['mask'][i, :, 0].sum())
        P = d['P'][i, :k]
        for dim in range(3):
            r = d['Y'][i, :k, dim] - a[i, dim] - d['X'][i, :k] @ bi[i, :, dim]
            K = P @ np.diag(psd[i] ** 2) @ P.T
            exact = K @ np.linalg.solve(K + s[i, dim] ** 2 * np.eye(k), r)
            approx = P @ (psd[i] * many[i, :, dim])
            assert np.abs(exact - approx).max() < 0.15 * np.abs(exact).max() + 1e-3


def test_every_estimator_refuses_a_level_outside_0_1_before_fitting():
    from kelly.career.temporal import EmotionalState, HierarchicalCareerGP
    cat, _ = simulate_catalog(n_artists=2, seed=6, songs_per_artist=12, change_rate=0.0, network=False)
    tab = career_table(cat)
    albums = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 3)),
                          columns=list(VAD)).assign(album_id=['m0'] * 10 + ['m1'] * 10)
    secs = cat.sections
    for level, fit in [(90, lambda: CareerGP(level=90).fit(tab)),
                       (1.0, lambda: HierarchicalCareerGP(level=1.0).fit(tab)),
                       (0, lambda: AlbumCoherence(level=0).fit(albums)),
                       (-0.1, lambda: SectionModel(level=-0.1).fit(secs)),
                       ('90%', lambda: EmotionalState(level='90%').fit(cat))]:
        with pytest.raises(InputError, match='use a probability in') as e:
            fit()
        assert str(level) in str(e.value)


# ---- issue 25: no flat spot where the Cholesky factorisation fails ----
def test_reml_objective_has_no_flat_spot_where_the_kernel_is_singular():
    """Songs of one album share a date: at a large amplitude, long length-scale and small noise K is singular in
    floating point. The first version returned 1e10 with a zero gradient there, and L-BFGS-B stopped at once."""
    import math
    from scipy import optimize
    t = np.repeat(np.arange(5.0), 4)
    Y = np.random.default_rng(4).normal(size=(20, 3)) * 0.2
    X = np.ones((20, 1))
    corner = np.log([0.2 * math.exp(10), 200.0, 0.2 * math.exp(-10)])
    value, grad = reml_nll(corner, t, Y, X)
    assert np.isfinite(value) and value < 1e9 and np.abs(grad).max() > 0
    box = [(-15.0, 15.0)] * 3  # bounded, as CareerGP fits (unbounded, scipy 1.17's first step overflows exp(theta))
    good = optimize.minimize(reml_nll, np.log([0.2, 2.0, 0.1]), args=(t, Y, X), jac=True, method='L-BFGS-B',
                             bounds=box)
    back = optimize.minimize(reml_nll, corner, args=(t, Y, X), jac=True, method='L-BFGS-B', bounds=box)
    assert abs(back.fun - good.fun) < 1e-3 * abs(good.fun)


# ---- issue 24: the per-artist map, serial against a local cluster ----
def test_careers_gp_on_two_local_workers_equals_the_serial_fit():
    from kelly.career.temporal import careers_gp
    cat, _ = simulate_catalog(n_artists=4, seed=5, songs_per_artist=15, change_rate=0.0, network=False, sections=False)
    table = career_table(cat)
    serial = careers_gp(table, scheduler='sync', interval='laplace')
    assert list(serial.index) == sorted(table.artist_id.unique()) and serial.index.name == 'artist_id'
    from kelly.parallel import dask_client
    with dask_client('local', workers=2) as client:
        local = careers_gp(table, scheduler=client, interval='laplace')
    pd.testing.assert_frame_equal(local, serial, check_exact=True)
