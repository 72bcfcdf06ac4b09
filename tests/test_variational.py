"""Tests of kelly.career.variational on random models the notebook does not try (p != d, non-identity H,
full Q and R)."""
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from kelly.core import InputError
from kelly.career.variational import (LinearGaussianSSM, VariationalStateSmoother, bench_variational, cavi,
                                      dense_precision, elbo_dense, fit_ssm_em, gaussian_vi, iterations_to,
                                      kalman_smoother, precision_blocks, statsmodels_smoother, vad_model)


def random_model(seed, d=3, p=2):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d))
    F = 0.95*A/np.abs(np.linalg.eigvals(A)).max()             # stable
    B, C = rng.standard_normal((d, d)), rng.standard_normal((p, p))
    return LinearGaussianSSM(F=F, H=rng.standard_normal((p, d)), Q=0.1*(B @ B.T + 0.5*np.eye(d)),
                             R=0.3*(C @ C.T + 0.5*np.eye(p)), m0=rng.standard_normal(d), P0=np.eye(d))


@pytest.mark.parametrize('seed', range(4))
def test_kalman_matches_statsmodels_and_dense_solve(seed):
    m = random_model(seed)
    y = m.simulate(30, seed=seed)[1]
    ks, sm = kalman_smoother(m, y), statsmodels_smoother(m, y)
    np.testing.assert_allclose(ks['means'], sm['means'], atol=1e-7)
    np.testing.assert_allclose(ks['covs'], sm['covs'], atol=1e-7)
    assert abs(ks['loglik'] - sm['loglik']) < 1e-6
    D, O, h, c = precision_blocks(m, y)
    J = dense_precision(D, O)
    S = np.linalg.inv(J)
    mu = S @ h.ravel()
    np.testing.assert_allclose(mu.reshape(30, 3), ks['means'], atol=1e-9)
    # the ELBO of the exact posterior is log p(y)
    assert abs(elbo_dense(J, h.ravel(), c, mu, S) - ks['loglik']) < 1e-7
    # the cross-covariances agree with the dense inverse
    np.testing.assert_allclose(ks['cross'][5], S[18:21, 15:18], atol=1e-9)


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('factorisation', ['time', 'coordinate'])
def test_cavi_means_exact_variances_too_small(seed, factorisation):
    m = random_model(seed)
    y = m.simulate(40, seed=seed + 10)[1]
    ks = kalman_smoother(m, y)
    r = cavi(m, y, factorisation=factorisation)
    assert r.converged
    assert np.abs(r.means - ks['means']).max() < 1e-6
    assert (np.diff(r.elbo) >= -1e-9*abs(r.elbo[-1])).all()
    assert r.elbo[-1] < ks['loglik']
    if factorisation == 'time':   # a full block per step: below the exact marginal covariance in the PSD order
        assert (np.linalg.eigvalsh(ks['covs'] - r.covs) > -1e-10).all()
    assert (r.variances < np.einsum('tii->ti', ks['covs'])).all()


def test_cavi_variance_is_inverse_diagonal_of_precision():
    m = random_model(7)
    y = m.simulate(20, seed=1)[1]
    D, O, h, c = precision_blocks(m, y)
    J = dense_precision(D, O)
    np.testing.assert_allclose(cavi(m, y, 'coordinate').variances.ravel(), 1/np.diag(J), rtol=1e-12)
    np.testing.assert_allclose(cavi(m, y, 'time').covs, np.linalg.inv(D), rtol=1e-10)


def test_cavi_from_a_far_start_still_converges():
    m = vad_model(q=0.01)
    y = m.simulate(60, seed=3)[1]
    r = cavi(m, y, init=np.full((60, 3), 50.0))
    assert r.converged and np.abs(r.means - kalman_smoother(m, y)['means']).max() < 1e-6
    assert (np.diff(r.elbo) >= -1e-9*abs(r.elbo[-1])).all()


@pytest.mark.parametrize('seed', range(3))
def test_natural_gradient_needs_fewer_iterations(seed):
    m = random_model(seed)
    y = m.simulate(25, seed=seed)[1]
    ll = kalman_smoother(m, y)['loglik']
    for family in ('full', 'time'):
        ng, gd = gaussian_vi(m, y, 'natural', family), gaussian_vi(m, y, 'gradient', family)
        assert ng.converged and gd.converged
        assert ng.n_iter < gd.n_iter
        np.testing.assert_allclose(ng.means, gd.means, atol=1e-6)
        for r in (ng, gd):
            assert (np.diff(r.elbo) >= -1e-9*abs(r.elbo[-1])).all()
    ng, gd = gaussian_vi(m, y, 'natural', 'full', step=0.5), gaussian_vi(m, y, 'gradient', 'full')
    assert iterations_to(ng.elbo, ll) < iterations_to(gd.elbo, ll) < len(gd.elbo)


def test_natural_gradient_rate_does_not_depend_on_conditioning():
    counts = {}
    for q in (0.2, 0.002):
        m = vad_model(q=q)
        y = m.simulate(30, seed=0)[1]
        counts[q] = (gaussian_vi(m, y, 'natural', 'full', step=0.5).n_iter,
                     gaussian_vi(m, y, 'gradient', 'full').n_iter)
    assert abs(counts[0.2][0] - counts[0.002][0]) <= 0.2*counts[0.2][0]     # natural gradient: about the same
    # plain gradient: many more on the ill-conditioned model
    assert counts[0.002][1] > 3*counts[0.2][1]


def test_em_recovers_parameters_and_increases_likelihood():
    true = vad_model(phi=0.7, q=0.1, r=0.1)
    ys = [true.simulate(300, seed=s)[1] for s in range(3)]
    fit, ll = fit_ssm_em(ys, n_iter=60)
    assert (np.diff(ll) >= -1e-8*abs(ll[-1])).all()
    np.testing.assert_allclose(np.diag(fit.F), 0.7, atol=0.12)
    np.testing.assert_allclose(np.diag(fit.R), 0.1, atol=0.04)


def test_estimator_frames_clone_and_predict():
    m = random_model(2, d=2, p=2)
    eta, y = m.simulate(30, seed=5)
    Y = pd.DataFrame(y, columns=['a', 'b'], index=pd.date_range('2020-01-01', periods=30, freq='MS'))
    est = VariationalStateSmoother(model=m, method='cavi', family='coordinate')
    assert clone(est).get_params()['family'] == 'coordinate'
    est.fit(Y)
    # H is not the identity: the states get their own names
    assert list(est.means_.columns) == ['state_0', 'state_1']
    assert est.means_.index.equals(Y.index)
    assert np.abs(est.means_.to_numpy() - est.exact_means_.to_numpy()).max() < 1e-6
    assert est.kl_ > 0 and (est.elbo_.diff().dropna() >= -1e-9*abs(est.elbo_.iloc[-1])).all()
    new = m.simulate(12, seed=6)[1]
    np.testing.assert_allclose(est.predict(new).to_numpy(), kalman_smoother(m, new)['means'], atol=1e-6)
    assert est.score() == pytest.approx(est.loglik_)
    for method, family in [('natural', 'full'), ('gradient', 'full'), ('natural', 'time'), ('kalman', None)]:
        e = VariationalStateSmoother(model=m, method=method, family=family).fit(Y)
        np.testing.assert_allclose(e.means_.to_numpy(), est.exact_means_.to_numpy(), atol=1e-6)
    idata = est.to_inference_data(draws=100, seed=1)
    assert idata.posterior['eta'].shape == (1, 100, 30, 2) and 'y' in idata.observed_data


def test_estimator_errors():
    Y = np.zeros((10, 3))
    with pytest.raises(InputError, match='family'):
        VariationalStateSmoother(method='advi', family='time').fit(Y)
    with pytest.raises(InputError, match='not finite'):
        VariationalStateSmoother(model=vad_model()).fit(np.full((5, 3), np.nan))
    with pytest.raises(InputError, match='3 columns'):
        VariationalStateSmoother(model=vad_model()).fit(np.zeros((5, 2)))
    with pytest.raises(InputError, match='level'):
        VariationalStateSmoother(model=vad_model()).fit(Y).interval(1.5)
    with pytest.raises(InputError, match='series too long'):
        gaussian_vi(vad_model(), np.zeros((1001, 3)))


def test_bench_tiny():
    recs = bench_variational(size='tiny')
    by = {(r['case'], r['metric']): r['value'] for r in recs}
    assert by[('plain gradient T=30 d=3', 'iterations')] > by[('natural gradient T=30 d=3', 'iterations')]
    assert by[('cavi vs kalman T=200 d=3', 'time_ratio')] == pytest.approx(
        by[('cavi T=200 d=3', 'seconds')] / by[('kalman smoother T=200 d=3', 'seconds')])
    assert by[('plain vs natural T=30 d=3', 'iteration_ratio')] == pytest.approx(
        by[('plain gradient T=30 d=3', 'iterations')] / by[('natural gradient T=30 d=3', 'iterations')])
    assert all(np.isfinite(r['value']) for r in recs)
    with pytest.raises(InputError):
        bench_variational(size='huge')
