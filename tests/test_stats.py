"""Tests of kelly.stats (uncertainty, explain, optimize) against references we did not write: MAPIE, shap,
closed forms, known fronts."""
import math, warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

from kelly.core import InputError
from kelly.stats import explain as ex
from kelly.stats import optimize as opt
from kelly.stats import uncertainty as unc


# ---------------------------------------------------------------- uncertainty

@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), alpha=st.floats(0.01, 0.99), seed=st.integers(0, 10_000))
def test_conformal_quantile_is_the_kth_order_statistic(n, alpha, seed):
    s = np.random.default_rng(seed).exponential(size=n)
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        q = unc.conformal_quantile(s, alpha)
    if k > n:
        assert q == math.inf and any(issubclass(x.category, unc.SmallCalibrationWarning) for x in w)
    else:
        assert q == np.sort(s)[k - 1]
        # the k-th smallest is exactly the fraction of scores at or below it that the guarantee needs
        assert np.mean(s <= q) >= (1 - alpha) * (n + 1) / n - 1e-12


def test_bad_inputs_are_refused():
    X, y = np.random.default_rng(0).normal(size=(20, 2)), np.zeros(20)
    m = LinearRegression().fit(X, y)
    for a in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(InputError, match='alpha'):
            unc.SplitConformalRegressor(m, alpha=a).calibrate(X, y)
    with pytest.raises(InputError, match='mismatched'):
        unc.SplitConformalRegressor(m).calibrate(X, y[:5])
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(InputError, match='NaN'):
        unc.SplitConformalRegressor(m).calibrate(Xn, y)
    with pytest.raises(InputError, match='NaN'):
        unc.SplitConformalRegressor(m).calibrate(X, np.r_[np.nan, y[1:]])


def _diabetes():
    return load_diabetes(return_X_y=True, as_frame=True)


def test_split_coverage_on_diabetes_is_in_the_guaranteed_band():
    X, y = _diabetes()
    n_cal, alpha = 144, 0.1
    cov = unc.split_coverage(lambda: unc.SplitConformalRegressor(Ridge(alpha=0.1), alpha=alpha), X, y,
                             n_splits=200, n_train=150, n_calibration=n_cal, seed=1)
    assert 1 - alpha <= cov.coverage.mean() <= 1 - alpha + 1 / (n_cal + 1)
    expected = unc.conformal_rank(n_cal, alpha) / (n_cal + 1)
    assert abs(cov.coverage.mean() - expected) < 3 * cov.coverage.std(ddof=1) / np.sqrt(len(cov)) + 1e-3


@pytest.mark.parametrize('alpha', [0.05, 0.1, 0.2, 0.33])
def test_split_conformal_equals_mapie(alpha):
    from mapie.regression import SplitConformalRegressor as MapieSplit
    X, y = _diabetes()
    perm = np.random.default_rng(int(alpha * 100)).permutation(len(X))
    tr, ca, te = perm[:200], perm[200:321], perm[321:]
    model = Ridge(alpha=0.3).fit(X.iloc[tr], y.iloc[tr])
    ours = unc.SplitConformalRegressor(model, alpha=alpha).calibrate(X.iloc[ca],
                                                                     y.iloc[ca]).predict_interval(X.iloc[te])
    _, theirs = MapieSplit(model, confidence_level=1 - alpha,
                           prefit=True).conformalize(X.iloc[ca], y.iloc[ca]).predict_interval(X.iloc[te])
    assert np.max(np.abs(ours[['lower', 'upper']].to_numpy() - theirs[:, :, 0])) < 1e-9
    assert list(ours.index) == list(X.index[te])


def _hetero(n, seed):
    g = np.random.default_rng(seed)
    X = g.uniform(-3, 3, size=(n, 2))
    return X, X[:, 0] - 0.5 * X[:, 1] + g.normal(size=n) * (0.1 + np.abs(X[:, 0]))


def test_adaptive_methods_cover_and_adapt():
    X, y = _hetero(4000, 0)
    for make in (lambda: unc.NormalizedConformalRegressor(LinearRegression(), alpha=0.1),
                 lambda: unc.ConformalizedQuantileRegressor(alpha=0.1, seed=0)):
        cov = unc.split_coverage(make, X, y, n_splits=4, n_train=1000, n_calibration=999, seed=2)
        assert 0.88 < cov.coverage.mean() < 0.93
        est = make().fit(X[:1000], y[:1000]).calibrate(X[1000:2000], y[1000:2000])
        w = est.predict_interval(np.array([[0.0, 0.0], [2.8, 0.0]])).eval('upper - lower')
        assert w.iloc[1] > 3 * w.iloc[0]


def test_cqr_interval_is_quantiles_widened_by_q():
    X, y = _hetero(600, 1)
    est = unc.ConformalizedQuantileRegressor(alpha=0.2).fit(X[:300], y[:300]).calibrate(X[300:500], y[300:500])
    lo, hi = est.lower_model_.predict(X[500:]), est.upper_model_.predict(X[500:])
    assert (est.lower_model_.loss, est.lower_model_.quantile, est.upper_model_.quantile) == ('quantile', 0.1, 0.9)
    iv = est.predict_interval(X[500:])
    np.testing.assert_allclose(iv.lower, lo - est.q_)
    np.testing.assert_allclose(iv.upper, hi + est.q_)
    s = np.maximum(est.lower_model_.predict(X[300:500]) - y[300:500], y[300:500] - est.upper_model_.predict(X[300:500]))
    assert est.q_ == np.sort(s)[unc.conformal_rank(200, 0.2) - 1]


def test_bagging_spread_is_the_observed_one_and_seeded():
    from sklearn.tree import DecisionTreeRegressor
    X, y = _hetero(300, 2)
    a = unc.BaggedRegressor(DecisionTreeRegressor(max_depth=3), n_bags=8, seed=3).fit(X, y)
    b = unc.BaggedRegressor(DecisionTreeRegressor(max_depth=3), n_bags=8, seed=3).fit(X, y)
    P = a.bag_predictions(X[:7])
    np.testing.assert_allclose(a.predict_std(X[:7]), P.std(0, ddof=1))
    np.testing.assert_array_equal(a.predict(X[:7]), b.predict(X[:7]))
    assert (a.predict_std(X[:7]) > 0).all()


def test_fgsm_and_adversarial_training():
    torch.manual_seed(0)
    g = np.random.default_rng(0)
    y = g.integers(0, 2, 600)
    X = (np.c_[y * 2.0 - 1, np.zeros(600)] + g.normal(scale=0.7, size=(600, 2))).astype(np.float32)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    torch.manual_seed(0)
    plain = make()
    robust = make()
    robust.load_state_dict(plain.state_dict())
    unc.adversarial_train(plain, X[:400], y[:400], adv_weight=0.0, epochs=15, batch_size=100, seed=0)
    unc.adversarial_train(robust, X[:400], y[:400], eps=0.4, adv_weight=0.5, epochs=15, batch_size=100, seed=0)
    r_plain, r_robust = unc.robustness(plain, X[400:], y[400:], 0.4), unc.robustness(robust, X[400:], y[400:], 0.4)
    assert r_plain.adversarial_loss > r_plain.clean_loss and r_plain.adversarial_accuracy <= r_plain.clean_accuracy
    assert r_robust.adversarial_loss < r_plain.adversarial_loss
    Xa = unc.fgsm(plain, X[:50], y[:50], 0.25)
    # every coordinate moves by eps (l-inf step)
    np.testing.assert_allclose(np.abs(Xa.numpy() - X[:50]), 0.25, atol=1e-6)
    assert plain.training is False


# ---------------------------------------------------------------- explain

def _mlp(p, act, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(p, 12), act, torch.nn.Linear(12, 1)).double()


@pytest.mark.parametrize('act', [torch.nn.ReLU(), torch.nn.Tanh()])
def test_exact_shapley_equals_shap_and_is_efficient(act):
    import shap
    p = 6
    g = np.random.default_rng(1)
    X, B = g.normal(size=(12, p)), g.normal(size=(30, p))
    net = _mlp(p, act)
    f = lambda A: net(torch.from_numpy(np.ascontiguousarray(A, dtype=np.float64))).detach().numpy()[:, 0]
    ours = ex.ExactShapley(net, B)
    phi = ours.shap_values(X)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        theirs = shap.explainers.Exact(f, shap.maskers.Independent(B, max_samples=30))(X).values
    assert np.max(np.abs(phi - theirs)) < 1e-8
    assert np.max(np.abs(phi.sum(1) - (f(X) - f(B).mean()))) < 1e-10
    # black-box path agrees with the fast one
    assert np.max(np.abs(phi - ex.ExactShapley(f, B).shap_values(X))) < 1e-10


def test_exact_shapley_axioms_on_a_black_box():
    g = np.random.default_rng(2)
    X, B = g.normal(size=(5, 4)), g.normal(size=(20, 4))
    f = lambda A: np.sin(A[:, 0] * A[:, 1]) + A[:, 2] ** 2        # feature 3 is ignored
    phi = ex.ExactShapley(f, B).shap_values(X)
    assert np.max(np.abs(phi[:, 3])) < 1e-12                     # dummy
    sym = lambda A: np.exp(-(A[:, 0] + A[:, 1]) ** 2)
    Xs = X.copy()
    Xs[:, 1] = Xs[:, 0]
    Bs = B.copy()
    Bs[:, 1] = Bs[:, 0]
    ps = ex.ExactShapley(sym, Bs).shap_values(Xs)
    np.testing.assert_allclose(ps[:, 0], ps[:, 1], atol=1e-12)     # symmetry
    assert np.max(np.abs(phi.sum(1) - (f(X) - f(B).mean()))) < 1e-10


def test_exact_shapley_with_a_sklearn_model_and_dataframes():
    import shap
    from sklearn.ensemble import GradientBoostingRegressor
    X, y = _diabetes()
    X = X.iloc[:, :5]
    m = GradientBoostingRegressor(n_estimators=20, max_depth=2, random_state=0).fit(X, y)
    out = ex.ExactShapley(m, X.iloc[:25]).explain(X.iloc[100:104])
    assert list(out.columns) == list(X.columns) and list(out.index) == list(X.index[100:104])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref = shap.explainers.Exact(m.predict,
                                    shap.maskers.Independent(X.iloc[:25].to_numpy(),
                                                             max_samples=25))(X.iloc[100:104].to_numpy()).values
    assert np.max(np.abs(out.to_numpy() - ref)) < 1e-8


def test_permutation_estimator_is_unbiased_and_efficient():
    g = np.random.default_rng(3)
    X, B = g.normal(size=(6, 7)), g.normal(size=(25, 7))
    net = _mlp(7, torch.nn.Tanh(), seed=4)
    exact = ex.ExactShapley(net, B).shap_values(X)
    est, se = ex.PermutationShapley(net, B, n_permutations=300, seed=5).explain(X)
    z = np.abs(est.to_numpy() - exact) / se.to_numpy()
    assert np.mean(z < 3) > 0.93
    np.testing.assert_allclose(est.to_numpy().sum(1), exact.sum(1), atol=1e-10)


def test_counterfactuals_match_closed_forms():
    g = np.random.default_rng(4)
    X = g.normal(size=(100, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * g.normal(size=100)
    lin = Ridge(alpha=1e-3).fit(X, y)
    w = lin.coef_
    x0 = X[0]
    cf = ex.counterfactual(lin, x0, margin=1.5, direction='down')
    np.testing.assert_allclose(cf.attrs['delta'], -1.5 * w / (w @ w), atol=1e-5)
    # bounds that bind: feature 3 may rise by at most 0.05 -> a KKT solution with that bound active
    up = np.full(4, np.inf)
    up[3] = x0[3] + 0.05
    cfb = ex.counterfactual(lin, x0, margin=1.5, direction='up', upper=up)
    d = cfb.attrs['delta']
    assert d[3] <= 0.05 + 1e-8 and cfb.attrs['after'] - cfb.attrs['before'] >= 1.5 - 1e-6
    free = np.array([0, 1, 2])
    need = 1.5 - w[3] * 0.05
    np.testing.assert_allclose(d[free], need * w[free] / (w[free] @ w[free]), atol=1e-4)
    clf = LogisticRegression().fit(X, (y > 0).astype(int))
    cfc = ex.counterfactual(clf, x0, classifier=True, margin=1e-4)
    wc, c = clf.coef_[0], clf.intercept_[0]
    assert cfc.attrs['success'] and cfc.attrs['after'] != cfc.attrs['before']
    assert abs(cfc.attrs['distance'] - abs(wc @ x0 + c) / np.linalg.norm(wc)) < 1e-3


def test_bench_explain_tiny_records():
    recs = ex.bench_explain('tiny', ps=(5,), tree_ps=())
    by = {r['metric']: r['value'] for r in recs}
    assert set(by) == {'seconds', 'shap_seconds', 'speedup_vs_shap', 'max_abs_diff_vs_shap'}
    assert by['max_abs_diff_vs_shap'] < 1e-8
    assert by['speedup_vs_shap'] == pytest.approx(by['shap_seconds'] / by['seconds'])

@pytest.mark.parametrize('kind', ['gbr', 'forest', 'tree'])
def test_tree_path_equals_exact_enumeration(kind):
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.tree import DecisionTreeRegressor
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 8))
    y = X[:, 0] * X[:, 1] + np.sin(3 * X[:, 2]) + (X[:, 3] > 0.2) - X[:, 4] ** 2
    model = dict(gbr=GradientBoostingRegressor(n_estimators=40, max_depth=4, random_state=0),
                 forest=RandomForestRegressor(15, max_depth=8, random_state=0),
                 tree=DecisionTreeRegressor(random_state=0))[kind].fit(X, y)
    B, rows = X[:30], X[200:206]
    walk = ex.ExactShapley(model, B)
    assert walk.trees is not None
    enum = ex.ExactShapley(model, B, fast=False)
    phi = walk.shap_values(rows)
    np.testing.assert_allclose(phi, enum.shap_values(rows), atol=1e-9, rtol=0)
    np.testing.assert_allclose(phi.sum(1), model.predict(rows) - model.predict(B).mean(), atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        import shap
        theirs = shap.TreeExplainer(model, data=B,
                                    feature_perturbation='interventional').shap_values(rows, check_additivity=False)
    np.testing.assert_allclose(phi, theirs, atol=1e-6)   # shap walks the trees in float32


def test_explaining_a_sklearn_model_never_imports_torch():
    import subprocess, sys
    code = ("import sys, numpy as np\n"
            "from sklearn.ensemble import GradientBoostingRegressor\n"
            "from sklearn.linear_model import Ridge\n"
            "from kelly.stats.explain import ExactShapley, PermutationShapley, counterfactual\n"
            "X = np.random.default_rng(0).normal(size=(80, 4)); y = X[:, 0] - X[:, 1] * X[:, 2]\n"
            "for m in (GradientBoostingRegressor(n_estimators=5).fit(X, y), Ridge().fit(X, y)):\n"
            "    ExactShapley(m, X[:10]).shap_values(X[:2]); ExactShapley(m, X[:10], fast=False).shap_values(X[:2])\n"
            "    PermutationShapley(m, X[:10], n_permutations=4).explain(X[:2]); counterfactual(m, X[0], n_starts=1)\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'False'


def test_bench_trees_tiny_records():
    recs = ex.bench_trees('tiny', ps=(5,), repeat=1)
    by = {r['metric']: r['value'] for r in recs}
    assert set(by) == {'seconds', 'model_seconds', 'overhead_ratio', 'treeshap_seconds', 'treeshap_speedup',
                       'treeshap_max_abs_diff', 'shap_tree_seconds', 'max_abs_diff_vs_shap_tree'}
    assert by['treeshap_max_abs_diff'] < 1e-9 and by['max_abs_diff_vs_shap_tree'] < 1e-5
    assert by['overhead_ratio'] >= 1  # kelly's total includes the time inside the model
    assert by['overhead_ratio'] == pytest.approx(by['seconds'] / by['model_seconds'])
    assert by['treeshap_speedup'] == pytest.approx(by['seconds'] / by['treeshap_seconds'])


# ---------------------------------------------------------------- optimize

@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(2, 3), seed=st.integers(0, 1000))
def test_non_dominated_rank_is_a_valid_layering(n, k, seed):
    F = np.random.default_rng(seed).integers(0, 5, size=(n, k)).astype(float)   # ties on purpose
    rank = opt.non_dominated_rank(F)
    dom = lambda a, b: (a <= b).all() and (a < b).any()
    for i in range(n):
        assert not any(dom(F[j], F[i]) for j in range(n) if rank[j] >= rank[i])
        if rank[i] > 0:
            assert any(dom(F[j], F[i]) for j in range(n) if rank[j] == rank[i] - 1)


def test_nsga2_recovers_zdt_fronts():
    for name, fun in (('zdt1', opt.zdt1), ('zdt2', opt.zdt2)):
        res = opt.NSGA2(pop_size=100, n_gen=250, seed=1).minimize(fun, [(0, 1)] * 30)
        fr = res.front()
        assert opt.generational_distance(fr[['f0', 'f1']], opt.zdt_front(name)) < 0.01
        assert fr.f0.min() < 0.05 and fr.f0.max() > 0.95                 # spread along the whole front


def test_expected_improvement_matches_monte_carlo():
    z = np.random.default_rng(0).normal(size=1_000_000)
    for mu, s, best in ((0.0, 1.0, 0.5), (1.0, 0.3, 0.2), (-1.0, 2.0, 0.0)):
        mc = np.maximum(best - (mu + s * z), 0).mean()
        assert abs(opt.expected_improvement(mu, s, best) - mc) < 5e-3 * max(1, s)


def test_bayes_opt_beats_random_search_on_branin():
    bounds = [(-5, 10), (0, 15)]
    bo = [opt.bayes_opt(opt.branin, bounds, n_iter=25, seed=s).best.iloc[-1] for s in range(3)]
    rs = [opt.random_search(opt.branin, bounds, n_iter=25, seed=s).best.iloc[-1] for s in range(3)]
    assert np.mean(bo) < np.mean(rs)
    assert np.mean(bo) - opt.BRANIN_MIN < 0.1


def test_bad_optimisation_inputs():
    with pytest.raises(InputError, match='bounds'):
        opt.NSGA2(4, 1).minimize(opt.zdt1, [(1, 0)])
    with pytest.raises(InputError, match='pop_size'):
        opt.NSGA2(pop_size=5)
    with pytest.raises(InputError, match='budget'):
        opt.random_search(opt.branin, [(-5, 10), (0, 15)], n_iter=0)
    with pytest.raises(InputError, match='weights'):
        opt.scalarize([1.0, 2.0], [-1, 2])
