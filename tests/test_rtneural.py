"""kelly.music.rtneural: RTNeural JSON, the NumPy reference runner, ONNX, checkpoints, `kelly export`, the real-time
runtime and its benchmark, and refusals of bad input."""
import json, os, subprocess, sys, time

import numpy as np
import pytest
import torch
from torch import nn

from kelly.core import InputError, KellyError, MissingResourceError, limit_threads
from kelly.music.idaw import MODELS, IDAWPipeline
from kelly.music.rtneural import (PIPELINE_INPUTS, PIPELINE_OUTPUTS, RealtimePipeline, RTNeuralModel, bench_idaw,
                                  check_onnx, check_pipeline_rtneural, export_main, load_checkpoints, load_rtneural,
                                  pipeline_state, realtime_allocations, rtneural_layers, save_checkpoints, save_onnx,
                                  save_rtneural, training_data_sha256)
from kelly.music.rtneural import _frame_allocations, _switch_counter, _time_block


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "Tiny networks on a shared machine: one thread for torch and BLAS (kelly.core.limit_threads), restored after."
    with limit_threads(1):
        yield


@pytest.fixture(scope='module')
def models():
    out = {}
    for i, (name, cls) in enumerate(MODELS.items()):
        torch.manual_seed(10 + i)
        out[name] = cls().eval()
    return out


@pytest.fixture(scope='module')
def json_dir(tmp_path_factory, models):
    d = tmp_path_factory.mktemp('rtneural')
    for name, m in models.items():
        save_rtneural(m, d/f'{name}.json')
    return d


@pytest.mark.parametrize('name', list(MODELS))
def test_json_matches_pytorch_over_100_stateful_frames(name, models, json_dir):
    m = models[name]
    rt = load_rtneural(json_dir/f'{name}.json')
    n = rt.in_size
    x = np.random.default_rng(1).standard_normal((100, n)).astype(np.float32)
    with torch.no_grad():
        recurrent = name in ('EmotionRecognizer', 'MelodyTransformer')
        want = (m(torch.as_tensor(x)[None])[0] if recurrent else m(torch.as_tensor(x))).numpy()
    got = rt.run(x)
    assert np.abs(got - want).max() < 1e-5
    if name in ('EmotionRecognizer', 'MelodyTransformer'):  # the state matters, and reset() forgets it
        assert np.abs(rt.run(x[:5]) - want[:5]).max() > 1e-4
        assert np.abs(rt.reset().run(x[:5]) - want[:5]).max() < 1e-5


def test_pipeline_on_json_matches_pytorch(models, json_dir):
    r = check_pipeline_rtneural(models, json_dir, frames=100, seed=3)
    assert r['same_choices']
    assert max(v for k, v in r.items() if k != 'same_choices') < 1e-5


def test_json_layout_follows_rtneural_loader(models, json_dir):
    spec = json.loads((json_dir/'EmotionRecognizer.json').read_text())
    assert spec['in_shape'][-1] == 128
    assert [l['type'] for l in spec['layers']] == ['dense', 'dense', 'lstm', 'dense']
    for l in spec['layers']:
        assert {'type', 'shape', 'weights'} <= set(l)
    m = models['EmotionRecognizer']
    k, r, b = spec['layers'][2]['weights']
    assert np.array(k).shape == (256, 512) and np.array(r).shape == (128, 512) and np.array(b).shape == (512,)
    # exact float32 round trip
    np.testing.assert_array_equal(np.array(k, np.float32), m.lstm.weight_ih_l0.detach().numpy().T)
    np.testing.assert_array_equal(np.array(b, np.float32), (m.lstm.bias_ih_l0 + m.lstm.bias_hh_l0).detach().numpy())
    first_kernel = np.array(spec['layers'][0]['weights'][0], np.float32)
    np.testing.assert_array_equal(first_kernel, m.fc1.weight.detach().numpy().T)
    # a standalone activation has empty weights
    seq = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Sigmoid())
    layers = rtneural_layers(seq)[0]['layers']
    assert layers[1]['type'] == 'activation' and layers[1]['weights'] == [] and layers[1]['activation'] == 'sigmoid'


def test_lstm_gate_order_by_hand():
    "i, f, c, o column blocks: a network whose forget gate alone is open keeps its cell, as PyTorch's i, f, g, o says."
    lstm = nn.LSTM(2, 3)
    with torch.no_grad():
        for p in lstm.parameters():
            p.zero_()
        lstm.bias_ih_l0[3:6] = 50  # f open
        lstm.bias_ih_l0[0:3] = 50  # i open
        lstm.bias_ih_l0[9:12] = 50  # o open
        lstm.weight_ih_l0[6:9, 0] = 1.0  # c candidate follows input 0
    weights = [lstm.weight_ih_l0.detach().T.tolist(), lstm.weight_hh_l0.detach().T.tolist(),
               (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().tolist()]
    seq_model = dict(in_shape=[None, None, 2], layers=[dict(type='lstm', shape=[None, None, 3], weights=weights)])
    x = np.array([[0.5, 0], [0.2, 0], [-0.1, 0]], np.float32)
    with torch.no_grad():
        want = lstm(torch.as_tensor(x)[:, None])[0][:, 0].numpy()
    np.testing.assert_allclose(RTNeuralModel(seq_model).run(x), want, atol=1e-6)


def test_softmax_is_overflow_safe():
    torch.manual_seed(0)
    hp = MODELS['HarmonyPredictor']().eval()
    with torch.no_grad():
        hp.fc3.bias.add_(200)
        hp.fc3.weight.mul_(2)
    raw = RTNeuralModel(_spec(hp, safe_softmax=False))
    safe = RTNeuralModel(_spec(hp))
    x = np.random.default_rng(0).standard_normal((50, 128)).astype(np.float32) * 1e4
    with torch.no_grad():
        want = hp(torch.as_tensor(x)).numpy()
    assert np.isnan(raw.run(x)).all()  # RTNeural's arithmetic without the shift: inf / inf
    got = safe.run(x)
    assert np.isfinite(got).all() and np.abs(got - want).max() < 1e-5
    notes = rtneural_layers(hp)[1]['layer 2']
    assert notes['logit_bound'] <= 80 and notes['underflow_free']
    # the bound holds for every input: the largest logit the shifted layer can produce is at most the bound
    W, b = safe.layers[-2][1], safe.layers[-2][2]
    assert (b + np.abs(W).sum(1)).max() <= notes['logit_bound'] + 1e-3


def _spec(model, **kw):
    spec = rtneural_layers(model, **kw)[0]
    return json.loads(json.dumps(spec, default=lambda a: a.tolist()))


def test_unsupported_models_are_refused():
    with pytest.raises(InputError, match='GELU'):
        save_rtneural(nn.Sequential(nn.Linear(3, 4), nn.GELU()), '/tmp/never.json')
    with pytest.raises(InputError, match='RTNeural cannot express'):
        save_rtneural(nn.Conv1d(2, 2, 3), '/tmp/never.json')
    with pytest.raises(InputError, match='LeakyReLU'):
        rtneural_layers(nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU()))
    with pytest.raises(InputError, match='ELU'):
        rtneural_layers(nn.Sequential(nn.Linear(3, 4), nn.ELU(alpha=0.5)))
    er = MODELS['EmotionRecognizer']()
    er.lstm = nn.LSTM(256, 128, num_layers=2)
    with pytest.raises(InputError, match='LSTM'):
        rtneural_layers(er)
    with pytest.raises(InputError, match='overflow-safe'):
        rtneural_layers(nn.Sequential(nn.Linear(3, 4), nn.Softmax(-1)))
    with pytest.raises(InputError, match='disagrees'):
        rtneural_layers(nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)))


def test_non_finite_weights_are_refused(tmp_path):
    m = MODELS['DynamicsEngine']()
    with torch.no_grad():
        m.fc2.weight[0, 0] = float('nan')
    with pytest.raises(InputError, match='non-finite'):
        save_rtneural(m, tmp_path/'x.json')
    assert not (tmp_path/'x.json').exists()
    with pytest.raises(InputError, match='non-finite'):
        save_checkpoints({'DynamicsEngine': m}, tmp_path)


def _good():
    torch.manual_seed(0)
    return _spec(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Sigmoid()))


@pytest.mark.parametrize('breaker,match', [
    (lambda s: s.pop('in_shape'), 'missing key "in_shape"'),
    (lambda s: s.pop('layers'), 'missing key "layers"'),
    (lambda s: s['layers'][0].pop('weights'), 'missing key "weights"'),
    (lambda s: s['layers'][1].pop('shape'), 'missing key "shape"'),
    (lambda s: s['layers'][0].pop('type'), 'missing key "type"'),
    (lambda s: s['layers'][0].update(type='gru'), 'unsupported layer'),
    (lambda s: s['layers'][0].update(activation='linear'), 'unknown activation'),
    (lambda s: s['layers'][0].update(shape=[None, None, 5]), 'disagree'),  # 5, but 4 weights: RTNeural would zero-fill
    (lambda s: s['layers'][0]['weights'][0].pop(), 'disagree'),  # a kernel row short
    (lambda s: s['layers'][0]['weights'][1].pop(), 'disagree'),  # a short bias: RTNeural reads past the end
    (lambda s: s['layers'][1]['weights'][0][0].append(0.5), 'ragged|disagree'),
    (lambda s: s.update(in_shape=[None, None, 2]), 'disagree'),
    (lambda s: s['layers'][0]['weights'][1].__setitem__(0, float('inf')), 'non-finite'),
    (lambda s: s['layers'].append(dict(type='activation', activation='tanh', shape=[None, None, 3], weights=[])),
     'shape disagrees'),
    (lambda s: s['layers'].append(dict(type='activation', activation='tanh', shape=[None, None, 2], weights=[[1.0]])),
     'disagree'),
])
def test_bad_json_is_refused(breaker, match):
    s = _good()
    RTNeuralModel(s)  # the unbroken one loads
    breaker(s)
    with pytest.raises(InputError, match=match):
        RTNeuralModel(s)


def test_bad_json_text_and_input(tmp_path):
    with pytest.raises(InputError, match='not JSON'):
        load_rtneural('{"in_shape": [null, 3], ')
    with pytest.raises(InputError, match='no such file'):
        load_rtneural(tmp_path/'absent.json')
    rt = RTNeuralModel(_good())
    with pytest.raises(InputError, match='wrong input shape'):
        rt.forward(np.zeros(4))


def test_onnx_each_model_and_pipeline(models, tmp_path):
    for name in ('MelodyTransformer', 'HarmonyPredictor'):
        p = save_onnx(models[name], tmp_path/f'{name}.onnx')
        assert check_onnx(models[name], p, frames=100, batch=3) < 1e-5
    pipe = IDAWPipeline(models)
    p = save_onnx(pipe, tmp_path/'pipeline.onnx')
    assert check_onnx(pipe, p, frames=100, batch=4) < 1e-5
    import onnx
    g = onnx.load(str(p)).graph
    assert g.input[0].type.tensor_type.shape.dim[0].dim_param == 'batch'
    assert [i.name for i in g.input] == PIPELINE_INPUTS and [o.name for o in g.output] == PIPELINE_OUTPUTS
    assert set(pipeline_state(pipe.reset(batch=1))) == set(PIPELINE_INPUTS[1:])
    assert {'emotion_h', 'melody_c', 'tempo_density'} <= set(PIPELINE_INPUTS)  # names that say what they hold


def test_checkpoints_manifest(models, tmp_path):
    man = save_checkpoints(models, tmp_path, training_data=dict(sha256='x' * 64))
    assert {m['parameters'] for m in man['models'].values()} == {403_264, 641_664, 74_176, 13_520, 18_656}
    assert all(m['parameters'] == m['spec_parameters'] for m in man['models'].values())
    back = load_checkpoints(tmp_path)
    for k in models:
        assert all(torch.equal(a, b) for a, b in zip(models[k].state_dict().values(), back[k].state_dict().values()))
    (tmp_path/'HarmonyPredictor.safetensors').write_bytes(b'broken')
    with pytest.raises(InputError, match='checksum'):
        load_checkpoints(tmp_path)


def test_training_data_hash_depends_on_data():
    f = dict(name='a', melody=np.array([60, 62]), chords=np.array([0, 1]), voice_pitch=np.zeros((2, 4)))
    g = dict(f, melody=np.array([60, 64]))
    assert training_data_sha256([f]) == training_data_sha256([dict(f)])
    assert training_data_sha256([f]) != training_data_sha256([g])
    assert training_data_sha256([f, g]) != training_data_sha256([g, f])


def test_export_main(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('KELLY_REPORTS', str(tmp_path/'reports'))  # no published weights, no cached ones
    monkeypatch.setenv('KELLY_CACHE', str(tmp_path/'cache'))
    with pytest.raises(MissingResourceError, match='allow-untrained'):
        export_main(['--format', 'rtneural', '--out', str(tmp_path/'out')])
    assert not (tmp_path/'out').exists()
    rc = export_main(['--format', 'rtneural', '--format', 'checkpoint', '--out', str(tmp_path/'out'),
                      '--allow-untrained', '--frames', '5'])
    assert rc == 0
    captured = capsys.readouterr()
    assert 'largest difference' in captured.out and 'untrained' in captured.out and 'warning: untrained' in captured.err
    assert sorted(p.name for p in (tmp_path/'out'/'rtneural').iterdir()) == sorted(f'{n}.json' for n in MODELS)
    man = json.loads((tmp_path/'out'/'checkpoints'/'manifest.json').read_text())
    assert man['training_data']['trained'] is False
    with pytest.raises(SystemExit):
        export_main(['--format', 'tflite', '--out', str(tmp_path)])
    with pytest.raises(KellyError):
        export_main(['--format', 'onnx', '--out', str(tmp_path), '--weights', str(tmp_path/'absent')])
    empty = tmp_path/'empty'
    empty.mkdir()
    with pytest.raises(InputError, match='EmotionRecognizer.safetensors'):
        export_main(['--format', 'onnx', '--out', str(tmp_path/'o2'), '--weights', str(empty)])


def test_export_finds_published_weights(tmp_path, monkeypatch):
    from kelly.music.idaw import save_models
    from kelly.music.rtneural import idaw_weights
    monkeypatch.setenv('KELLY_REPORTS', str(tmp_path/'reports'))
    monkeypatch.setenv('KELLY_CACHE', str(tmp_path/'cache'))
    torch.manual_seed(5)
    trained = {k: v().eval() for k, v in MODELS.items()}
    folder = save_models(trained, tmp_path/'reports'/'artifacts'/'idaw'/'weights')
    (folder.parent/'scores.json').write_text(json.dumps(dict(n_train=3, n_test=1)))
    got, src = idaw_weights()
    assert src == dict(folder=str(folder), source='report', untrained=[], scores=dict(n_train=3, n_test=1))
    assert torch.equal(got['EmotionRecognizer'].fc1.weight, trained['EmotionRecognizer'].fc1.weight)


def _sharpened(models, shift):
    "Copies of `models` whose note probabilities move (untrained ones sit near 0.5): notes change, or rest."
    out = {k: MODELS[k]().eval() for k in models}
    for k, m in out.items():
        m.load_state_dict(models[k].state_dict())
    with torch.no_grad():
        out['MelodyTransformer'].fc3.weight.mul_(20)
        out['MelodyTransformer'].fc3.bias.sub_(shift)
    return out


def _frames_agree(pipe, fast, mels):
    "Step both frame by frame; the largest difference of any output, and the notes and chords chosen."
    worst, notes, chords = 0.0, [], []
    for mel in mels:
        want, got = pipe.step(mel=torch.as_tensor(mel[None])), fast.step(mel)
        for k in ('notes', 'chords', 'groove', 'expression', 'embedding'):
            worst = max(worst, float(np.abs(got[k] - want[k][0].numpy()).max()))
        assert (got['note'], got['chord']) == (int(want['note'][0]), int(want['chord'][0]))
        notes.append(got['note'])
        chords.append(got['chord'])
    return worst, set(notes), set(chords)


@pytest.mark.parametrize('shift,key', [(3, dict(tonic=2, major=False, tempo=120.0, density=1.6, beats_per_bar=3)),
                                       (6, dict(tonic=9, major=True, tempo=70.0, density=0.8, beats_per_bar=5))])
def test_realtime_pipeline_matches_step_frame_by_frame(models, shift, key):
    "Every output of every frame, the LSTM states, previous note, chord and beat carried over 150 frames, then reset."
    nets = _sharpened(models, shift)
    pipe = IDAWPipeline(nets).reset(batch=1, **key)
    fast = RealtimePipeline(nets).reset(**key)
    mels = np.random.default_rng(shift).random((150, 128), dtype=np.float32)
    worst, notes, chords = _frames_agree(pipe, fast, mels)
    assert worst < 1e-5
    assert len(chords) > 1 and (len(notes) > 1 if shift == 3 else notes == {-1})  # notes vary, or rests only
    pipe.reset(batch=1)
    fast.reset()
    assert _frames_agree(pipe, fast, mels[:20])[0] < 1e-5


def test_realtime_pipeline_takes_over_a_stream(models):
    "`from_pipeline` continues the PyTorch pipeline's stream; a fresh runtime, without that state, does not."
    nets = _sharpened(models, 3)
    pipe = IDAWPipeline(nets).reset(batch=1, tonic=4, beats_per_bar=3)
    mels = np.random.default_rng(7).random((60, 128), dtype=np.float32)
    pipe.run(mels=torch.as_tensor(mels[None, :40]))
    fast = RealtimePipeline.from_pipeline(pipe)
    assert fast.beat == 40 and fast.beats_per_bar == 3 and fast.note == int(pipe.state['note'][0])
    continued = fast.run(mels[40:])
    want = pipe.run(mels=torch.as_tensor(mels[None, 40:]))
    for k in ('notes', 'chords', 'expression'):
        assert np.abs(continued[k] - want[k][0].numpy()).max() < 1e-5
    fresh = RealtimePipeline(nets).reset(tonic=4, beats_per_bar=3).run(mels[40:])
    assert np.abs(fresh['chords'] - continued['chords']).max() > 1e-4  # the state taken over matters
    with pytest.raises(InputError, match='batch'):
        RealtimePipeline(nets).load_state(IDAWPipeline(nets).reset(batch=2))


def test_realtime_pipeline_refuses_bad_input(models):
    fast = RealtimePipeline(models)
    with pytest.raises(InputError, match='128 mel values'):
        fast.step(np.zeros(127, np.float32))
    with pytest.raises(InputError, match='128 mel values'):
        fast.step(np.zeros((2, 128), np.float32))
    for bad in (dict(tonic=12), dict(tonic=True), dict(beats_per_bar=0)):
        with pytest.raises(InputError):
            fast.reset(**bad)


def test_bench_idaw_records():
    "The idaw benchmark is the runtime's, times the three runtimes, and its records agree with each other."
    from kelly.bench import BENCHMARKS
    assert BENCHMARKS['idaw'] is bench_idaw  # imported after kelly.music.idaw's, it replaces it
    recs = bench_idaw('tiny')
    value = {(r['case'], r['metric']): r['value'] for r in recs}
    for runtime in ('torch', 'realtime', 'onnxruntime'):
        case = f'pipeline {runtime} batch=1 threads=1 normal'
        p50, p99, p999, worst = (value[case, m] for m in ('latency_p50', 'latency_p99', 'latency_p999', 'latency_max'))
        assert 0 < p50 <= p99 <= p999 <= worst
        assert 0 <= value[case, 'frames_over_1ms'] <= 1 and value[case, 'frames_over_buffer'] <= 400
        assert value[case, 'cpu_time_p99'] <= p999 + 0.05  # CPU time within the wall time (clock granularity aside)
        assert 0 < value[case, 'cpu_time_p50'] <= value[case, 'cpu_time_p99']
        if _switch_counter() is not None:  # Linux: switches counted per thread and frame
            switched = value[case, 'frames_with_switch']
            assert 0 <= switched <= 1 and value[case, 'involuntary_switches'] >= round(switched * 400)
            assert value[case, 'latency_p99_no_switch'] <= worst and 0 <= value[case, 'wait_p99'] <= worst
        if runtime != 'torch':
            torch_p50 = value[case.replace(runtime, 'torch'), 'latency_p50']
            assert value[case, 'speedup_p50_vs_torch'] == pytest.approx(torch_p50 / p50)
            assert value[f'pipeline {runtime} batch=1', 'max_abs_diff_vs_torch'] < 1e-5
            assert value[f'pipeline {runtime} batch=1', 'same_notes_and_chords'] == 1
    assert value['machine', 'cpus'] >= 1
    heap = {m: value['pipeline realtime batch=1', m] for m in ('heap_peak_per_frame_max', 'heap_kept_per_frame')}
    assert heap['heap_peak_per_frame_max'] <= 64 and abs(heap['heap_kept_per_frame']) < 1, heap
    assert {case.split()[0] for case, metric in value if metric == 'speedup_vs_spec'} == set(MODELS)


def test_frame_allocations_see_what_a_call_allocates():
    "The measurement allocates nothing itself, sees a call's allocation, and what a call keeps."
    peaks, kept = _frame_allocations(lambda x: None, [0] * 50)
    assert peaks.max() == 0 and kept == 0
    peaks, _ = _frame_allocations(lambda x: bytearray(4096), [0] * 10)
    assert peaks.min() >= 4096
    hoard = []
    _, kept = _frame_allocations(lambda x: hoard.append(bytearray(1000)), [0] * 20)
    assert kept >= 20 * 1000


def test_realtime_step_allocates_almost_nothing(models):
    "After warm-up a compiled frame allocates nothing, the NumPy frame the beat counter's int; neither keeps any."
    heap = realtime_allocations(models, frames=1000)
    assert heap['peak_max_bytes'] == 0 and abs(heap['kept_bytes_per_frame']) < 1, heap
    heap = realtime_allocations(models, frames=1000, compiled=False)
    assert heap['peak_max_bytes'] <= 96 and abs(heap['kept_bytes_per_frame']) < 1, heap


def test_compiled_and_numpy_frames_agree_and_take_turns(models):
    "Both frames share one stream's memory: alternating them gives what either gives alone."
    nets = _sharpened(models, 3)
    mels = np.random.default_rng(11).random((80, 128), dtype=np.float32)
    compiled = RealtimePipeline(nets).reset(tonic=5, major=False, beats_per_bar=3)
    reference = RealtimePipeline(nets, compiled=False).reset(tonic=5, major=False, beats_per_bar=3)
    assert compiled.compiled and not reference.compiled
    want, got = reference.run(mels), compiled.run(mels)
    for k in ('notes', 'chords', 'groove', 'expression', 'embedding'):
        assert np.abs(got[k] - want[k]).max() < 1e-6, k
    assert (got['note'] == want['note']).all() and (got['chord'] == want['chord']).all()
    assert len(set(got['note'])) > 1 and len(set(got['chord'])) > 1
    turns = RealtimePipeline(nets).reset(tonic=5, major=False, beats_per_bar=3)
    chords = []
    for t, mel in enumerate(mels):
        turns.compiled = t % 2 == 0
        chords.append(turns.step(mel)['chord'])
    assert chords == list(want['chord']) and turns.beat == len(mels)


@pytest.mark.skipif(_switch_counter() is None or not hasattr(os, 'sched_setaffinity'), reason='Linux only')
def test_involuntary_switches_are_counted_per_frame():
    "A busy process on this thread's only core preempts it: every frame that waited has its switch counted."
    frames, core, allowed = 200, min(os.sched_getaffinity(0)), os.sched_getaffinity(0)
    times = (np.zeros(frames), np.zeros(frames), np.zeros(frames))
    busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        os.sched_setaffinity(busy.pid, {core})
        os.sched_setaffinity(0, {core})
        time.sleep(0.2)  # let the busy process start spinning
        _time_block(lambda n: sum(range(n)), [100_000], times, 0, frames, _switch_counter())  # frames of ~2 ms
    finally:
        os.sched_setaffinity(0, allowed)
        busy.kill()
        busy.wait()
    wall, cpu, switches = times
    waited = wall - cpu  # ns the frame spent off the core
    assert (switches > 0).sum() >= 5, switches  # two runnable processes on one core: the scheduler alternates them
    assert (waited > 200_000).sum() >= 5, np.sort(waited)[-10:]  # frames longer than a time slice wait inside
    # and such waits are counted (a virtual machine's host can also steal a core unseen by the guest's scheduler,
    # so a rare uncounted wait is allowed; a broken counter would count none)
    assert (switches[waited > 200_000] > 0).mean() >= 0.9


def test_without_numba_the_numpy_frame_runs_and_asking_for_the_compiled_one_is_a_clear_error(models, monkeypatch):
    import kelly.music.rtneural as R
    from kelly.core import MissingResourceError
    monkeypatch.setattr(R, 'HAVE_NUMBA', False)
    assert not RealtimePipeline(models).compiled
    with pytest.raises(MissingResourceError, match='compiled=False'):
        RealtimePipeline(models, compiled=True)
