"""kelly.parallel against a real Dask cluster: a `dask scheduler` and two `dask worker` processes on 127.0.0.1,
one of them killed in the middle of a run."""
import functools, json, os, signal, socket, subprocess, threading, time

import pytest

from conftest import BIN
from kelly.parallel import dask_client, demo_task, parallel_map


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    "A scheduler and two single-threaded workers, each its own process group; stopped afterwards."
    port = _free_port()
    address = f'tcp://127.0.0.1:{port}'
    env = {**os.environ, 'DASK_DISTRIBUTED__WORKER__DAEMON': 'False'}
    log = open(tmp_path / 'dask.log', 'w')
    start = lambda *a: subprocess.Popen([str(BIN / 'dask'), *a], stdout=log, stderr=log, env=env,
                                        start_new_session=True)
    procs = [start('scheduler', '--host', '127.0.0.1', '--port', str(port), '--no-dashboard')]
    procs += [start('worker', address, '--nthreads', '1', '--nworkers', '1', '--no-dashboard', '--name', f'w{i}')
              for i in (1, 2)]
    try:
        yield address, procs
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        log.close()


def kill_a_worker_mid_run(run, # the work, given the client (returns its result)
                          begun, # true once the work has begun (a first file written)
                          worker, # the `dask worker` process (group) to SIGKILL then
                         ):
    "Run `run()` on a thread, kill `worker` once `begun()` holds (or after 60 s), and return what `run` returned."
    got = {}
    thread = threading.Thread(target=lambda: got.update(out=run()))
    thread.start()
    deadline = time.monotonic() + 60
    while not begun() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(worker.pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    return got['out']


def test_a_killed_worker_costs_time_not_results(cluster, tmp_path):
    address, procs = cluster
    serial = parallel_map(demo_task, range(12), scheduler='sync', seed=5)
    out = tmp_path / 'out'
    out.mkdir()
    task = functools.partial(demo_task, out=str(out), pause=0.4)
    with dask_client(address) as client:
        client.wait_for_workers(2, timeout=120)
        values = kill_a_worker_mid_run(lambda: parallel_map(task, range(12), client, seed=5),
                                       begun=lambda: list(out.glob('*.json')), worker=procs[1])
        assert len(client.scheduler_info()['workers']) == 1
    assert values == serial                                              # identical, in input order
    written = {int(p.stem): json.loads(p.read_text())['value'] for p in out.glob('*.json')}
    assert written == dict(enumerate(serial))                            # every item once, complete
    assert not [p for p in out.iterdir() if p.suffix == '.tmp']          # no torn write left behind


def test_local_cluster_equals_the_serial_run():
    serial = parallel_map(demo_task, range(8), scheduler='sync', seed=1)
    assert parallel_map(demo_task, range(8), scheduler='local', seed=1) == serial


def test_an_unreachable_scheduler_is_a_clear_error():
    from kelly.core import ConfigError
    with pytest.raises(ConfigError, match='unreachable'):
        with dask_client(f'tcp://127.0.0.1:{_free_port()}'):
            pass


def test_check_scheduler_names_and_refusals():
    from kelly.core import InputError
    from kelly.parallel import _check_scheduler, check_scheduler
    assert [check_scheduler(s) for s in ('sync', ' local', None, 'tls://h:1')] == ['sync', 'local', 'local', 'tls://h:1']
    for bad in ('threads', '127.0.0.1:8786', ''):
        with pytest.raises(InputError, match='scheduler') as e:
            check_scheduler(bad)
        assert 'tcp://127.0.0.1:8786' in str(e.value)   # the fix names an address to give
    assert _check_scheduler is check_scheduler           # the old name, kept for modules not yet moved


def test_the_progress_bar_counts_weights(monkeypatch, capsys):
    monkeypatch.setenv('KELLY_PROGRESS', '1')
    assert parallel_map(abs, [-1, -2, -3], scheduler='sync', weights=[5, 1, 1], desc='files') == [1, 2, 3]
    assert '7/7' in capsys.readouterr().err


def _worker_state(dask_worker):
    "What a worker runs besides its tasks: whether its statistical profiler is on, and glibc's trim setting."
    return 'profile' in dask_worker.periodic_callbacks, os.environ.get('MALLOC_TRIM_THRESHOLD_')


def test_local_workers_run_without_the_profiler_or_dasks_malloc_setting():
    with dask_client('local', workers=2) as client:
        assert set(client.run(_worker_state).values()) == {(False, None)}
