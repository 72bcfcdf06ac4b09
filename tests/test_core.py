"""kelly.core: atomic_write under a simulated crash (the target holds either the old or the new contents, never a torn
file), the error family, and as_series_array."""
import os, subprocess, sys, textwrap

import numpy as np
import pandas as pd
import pytest

from kelly.core import InputError, KellyError, as_series_array, atomic_write


def test_exception_mid_write_keeps_old_contents(tmp_path):
    p = tmp_path / 'table.csv'
    p.write_text('old')
    with pytest.raises(ZeroDivisionError):
        with atomic_write(p) as f:
            f.write('new, half written')
            1 / 0
    assert p.read_text() == 'old'
    assert [q.name for q in tmp_path.iterdir()] == ['table.csv']


@pytest.mark.parametrize('how', ['exit', 'sigkill'])
def test_process_killed_mid_write_keeps_old_contents(tmp_path, how):
    "A process that dies inside the block (no cleanup runs at all) leaves the old file whole."
    p = tmp_path / 'model.json'
    p.write_text('{"version": 1}')
    die = 'os._exit(1)' if how == 'exit' else 'os.kill(os.getpid(), signal.SIGKILL)'
    code = textwrap.dedent(f'''
        import os, signal
        from kelly.core import atomic_write
        with atomic_write({str(p)!r}) as f:
            f.write('{{"version": 2, "weights": [' + '0.5, ' * 100000)
            f.flush(); os.fsync(f.fileno())
            {die}
    ''')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True)
    assert res.returncode != 0
    assert p.read_text() == '{"version": 1}'


def test_new_file_permissions_follow_umask(tmp_path):
    p = tmp_path / 'new.txt'
    with atomic_write(p) as f:
        f.write('x')
    m = os.umask(0)
    os.umask(m)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~m)


def test_error_names_field_value_and_fix():
    e = InputError('songs.tempo', -3, 'give a tempo in BPM above 0', 'out of range')
    assert isinstance(e, KellyError) and isinstance(e, ValueError)
    assert all(s in str(e) for s in ('songs.tempo', '-3', 'give a tempo in BPM above 0', 'out of range'))


# as_series_array: the one way kelly turns a time series into a (T, p) float array (change points, smoothers)

@pytest.mark.parametrize('values, options, problem, field', [
    ([1., np.nan, 3.], {}, 'not finite', 'y[1]'),                                  # NaN refused by default
    ([1., 2., np.inf], dict(allow_nan=True), 'not finite', 'y[2]'),                # inf refused even when NaN is not
    (np.zeros((3, 2, 2)), {}, 'wrong number of dimensions', 'y.shape'),
    (4.0, {}, 'wrong number of dimensions', 'y.shape'),                            # a scalar is no series
    ([1., 2.], dict(min_length=3), 'series too short', 'len(y)'),
    (['a', 'b', 'c'], {}, 'not numeric', 'y'),
    (pd.DataFrame(dict(a=['x', 'y'])), {}, 'not numeric', 'y'),
    ([[1., np.nan], [np.nan, 2.], [3., 4.]], dict(allow_nan=True), 'too few observed values', 'y'),
])
def test_as_series_array_refuses_with_field_value_and_fix(values, options, problem, field):
    with pytest.raises(InputError) as e:
        as_series_array(values, 'y', **options)
    assert (e.value.problem, e.value.field) == (problem, field)
    assert e.value.fix and e.value.fix in str(e.value)


def test_as_series_array_accepts_lists_arrays_and_frames():
    np.testing.assert_array_equal(as_series_array([1, 2, 3]), [[1.], [2.], [3.]])   # 1-d: one column, as floats
    assert as_series_array(np.arange(3)).dtype == np.float64
    frame = pd.DataFrame(dict(a=[1., 2., 3.], b=[4., 5., 6.]), index=[30, 10, 20])
    out = as_series_array(frame)
    assert isinstance(out, np.ndarray)                       # the values by position; the index is not kept
    np.testing.assert_array_equal(out, [[1., 4.], [2., 5.], [3., 6.]])
    np.testing.assert_array_equal(as_series_array(pd.Series([5., 6.], index=['x', 'y'])), [[5.], [6.]])
    with_nan = as_series_array([1., np.nan, 3., 4.], allow_nan=True)
    assert np.isnan(with_nan[1, 0]) and with_nan.shape == (4, 1)
    assert as_series_array([1., 2., 3.], min_length=3).shape == (3, 1)   # exactly min_length is enough


def test_as_series_array_says_the_callers_fix():
    with pytest.raises(InputError, match='or lower min_size'):
        as_series_array([1., 2.], 'Y', min_length=4, length_fix='pass 4 rows, or lower min_size')
    with pytest.raises(InputError, match='before smoothing'):
        as_series_array([1., np.nan], 'y', missing_fix='impute before smoothing')
    with pytest.raises(InputError, match='drop infinite values'):   # with NaN allowed, only inf is left to fix
        as_series_array([1., np.inf], 'y', allow_nan=True, missing_fix='impute before smoothing')
