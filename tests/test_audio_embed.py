"""Tests of kelly.audio.embed: the equations of §2.3 and §3 against plain loops, the extractors, the MERT loader on
random MERT-layout folders, and cached, resumable extraction over a folder, here and on Dask workers."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from kelly.core import ConfigError, InputError, MissingResourceError
from kelly.audio.signal import HOP_SAMPLES, SAMPLE_RATE, SEGMENT_SAMPLES, log_mel
from kelly.audio import embed as E
from test_parallel import cluster, kill_a_worker_mid_run  # noqa: F401 (a scheduler and two workers on 127.0.0.1)

SR = SAMPLE_RATE


def music(seconds, seed=0):
    return E._music(seconds, seed)


pytestmark = pytest.mark.usefixtures('torch_one_thread')


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    return E.tiny_mert(tmp_path_factory.mktemp('mert') / 'tiny')


@pytest.fixture(scope='module')
def tiny(tiny_dir):
    return E.MERTExtractor(tiny_dir)


# --- the equations, against loops ---------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 6), st.integers(1, 5)),
              elements=st.floats(-100, 100, width=32)))
@example(h_raw=np.full((1, 1, 1, 2), 1e-45, np.float32))  # subnormal: a float32 reference `v / norm` gave 1.0 here
def test_pooling_and_flattening_equal_the_spec_loops(h_raw):
    n_seg, L, T, D = h_raw.shape
    h_seg = np.stack([E.time_mean(h) for h in h_raw])
    h_track = E.segment_mean(h_seg)
    v = E.flatten_layers(h_track)
    for l in range(L):
        for j in range(D):
            seg_means = [sum(float(h_raw[i, l, t, j]) for t in range(T)) / T for i in range(n_seg)]
            assert abs(h_track[l, j] - sum(seg_means) / n_seg) <= 1e-4 * (1 + abs(h_track[l, j]))
            assert v[l * D + j] == h_track[l, j]  # k = i × dims + j, layer-major
    norm = sum(float(x) ** 2 for x in v) ** 0.5  # in float64, where float32's subnormals are ordinary numbers
    u = E.l2_normalize(v)
    if norm == 0:
        assert np.array_equal(u, v)
    else:
        reference = [float(x) / norm for x in v]
        np.testing.assert_allclose(u, reference, rtol=1e-5, atol=1e-7)


def test_l2_zero_rule_rows_and_errors():
    rows = np.array([[3, 4], [0, 0], [0, -2]], np.float32)
    np.testing.assert_allclose(E.l2_normalize(rows), [[0.6, 0.8], [0, 0], [0, -1]])
    with pytest.raises(InputError):
        E.l2_normalize(np.array([1.0, np.nan]))
    with pytest.raises(InputError):
        E.time_mean(np.zeros((2, 0, 3)))
    with pytest.raises(InputError):
        E.segment_mean(np.zeros((0, 2, 3)))


class Toy(E.Extractor):
    "An extractor whose features are simple functions of each segment, to check the base class's pooling."
    name, layers, dims = 'toy', 2, 3
    def segment_features(self, segs):
        segs = np.atleast_2d(segs).astype(np.float64)
        f = np.stack([segs.mean(1), np.abs(segs).mean(1), segs.shape[1] * np.ones(len(segs)), segs[:, 0], segs[:, -1],
                      (segs ** 2).mean(1)], 1)
        return f.reshape(len(segs), 2, 3).astype(np.float32)


def test_base_class_pools_segments_as_the_spec_says():
    x = music(13.7)
    toy = Toy()
    starts = range(0, len(x) - SEGMENT_SAMPLES + 1, HOP_SAMPLES)
    expected = np.mean([toy.segment_features(x[s:s + SEGMENT_SAMPLES][None])[0] for s in starts], axis=0)
    np.testing.assert_allclose(toy.layer_features(x), expected, rtol=1e-5)
    v = toy.embed(x)
    np.testing.assert_allclose(v, expected.reshape(-1) / np.linalg.norm(expected), rtol=1e-5)
    short = x[:30_000]  # shorter than a segment: one unpadded segment
    assert toy.layer_features(short)[0, 2] == 30_000


def test_inputs_paths_rates_and_errors(tmp_path):
    toy = Toy()
    x = music(3)
    sf.write(tmp_path / 'a.wav', x, SR, subtype='FLOAT')
    np.testing.assert_allclose(toy.layer_features(tmp_path / 'a.wav'), toy.layer_features(x), rtol=1e-5)
    np.testing.assert_allclose(toy.layer_features(str(tmp_path / 'a.wav')), toy.layer_features(x), rtol=1e-5)
    with pytest.raises(InputError, match='sr'):
        toy.embed(tmp_path / 'a.wav', sr=SR)
    bad = x.copy()
    bad[5] = np.nan
    with pytest.raises(InputError, match='NaN'):
        toy.embed(bad)
    with pytest.raises(InputError, match='empty audio'):
        toy.embed(np.zeros(0, np.float32))
    with pytest.raises(InputError, match='not audio'):
        toy.embed(12)
    with pytest.raises(InputError, match='on_silent'):
        toy.embed(x, on_silent='skip')
    assert not toy.embed(np.zeros(SR)).any()
    with pytest.raises(InputError, match='silent audio'):
        toy.embed(np.zeros(SR), on_silent='error')


# --- the log-mel extractor -------------------------------------------------------------------------------------------

def test_logmel_fast_path_equals_per_segment_loop():
    lm = E.LogMelExtractor(n_mels=16, n_ffts=(400, 1600))
    x = music(16.3, seed=2)
    xn = ((x.astype(np.float64) - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)
    levels = [log_mel(xn, SR, n, n // 4, 16, lm.fmin, lm.fmax) for n in lm.n_ffts]
    top = max(l.max() for l in levels)
    expected = []
    for n_fft, full in zip(lm.n_ffts, levels):
        hop, segs = n_fft // 4, []
        for s in range(0, len(x) - SEGMENT_SAMPLES + 1, HOP_SAMPLES):
            seg = np.maximum(log_mel(xn[s:s + SEGMENT_SAMPLES], SR, n_fft, hop, 16, lm.fmin, lm.fmax), top - lm.top_db)
            shape = seg - seg.mean(axis=0, keepdims=True)  # level relative to the frame's mean over bands
            feats = np.concatenate([shape[:, 1:], np.abs(np.diff(seg, axis=1))], axis=0)  # (dims, T-1)
            segs.append(feats.mean(1))
        expected.append(np.mean(segs, 0))
    np.testing.assert_allclose(lm.layer_features(x), np.stack(expected), atol=2e-3)


def test_logmel_properties():
    lm = E.LogMelExtractor()
    assert (lm.layers, lm.dims, lm.dim) == (3, 128, 384)
    x = music(7)
    v = lm.embed(x)
    assert v.dtype == np.float32 and v.shape == (384,) and abs(np.linalg.norm(v) - 1) < 1e-5
    assert lm.embed(0.1 * x) @ v > 1 - 1e-5  # loudness does not matter
    assert lm.embed(music(7, seed=5)) @ v < 1 - 1e-4  # different music differs
    assert E.make_extractor(**json.loads(json.dumps(lm.settings()))).settings() == lm.settings()
    with pytest.raises(InputError):
        E.LogMelExtractor(n_ffts=(700,))  # its hop, 175, does not divide 60,000
    with pytest.raises(InputError):
        E.LogMelExtractor(n_mels=0)
    with pytest.raises(InputError, match='too short'):
        lm.embed(music(0.2))


# --- MERT on random MERT-layout folders ------------------------------------------------------------------------------

def test_layouts():
    full = E.mert_layout('full')
    sizes = (full['hidden_size'], full['num_hidden_layers'], full['num_attention_heads'], full['intermediate_size'])
    assert sizes == (768, 12, 12, 3072)
    assert full['conv_dim'] == [512] * 7 and full['conv_kernel'] == [10, 3, 3, 3, 3, 2, 2]
    assert np.prod(full['conv_stride']) == 320 and E.frames_per_second(full) == 75.0
    tiny = E.mert_layout('tiny')
    assert tiny['conv_stride'] == full['conv_stride'] and tiny['num_hidden_layers'] == 12
    from transformers import HubertModel
    with torch.device('meta'):
        n = sum(p.numel() for p in HubertModel(E.hubert_config_from_dict(full)).parameters())
    assert 90e6 < n < 100e6  # MERT-v1-95M


def test_mert_loads_the_folder_and_returns_13_layers(tiny, tiny_dir):
    assert (tiny.layers, tiny.dims) == (13, 32)
    x = music(8.1)
    v = tiny.embed(x)
    assert v.shape == (13 * 32,) and abs(np.linalg.norm(v) - 1) < 1e-5
    segs = [x[s:s + SEGMENT_SAMPLES] for s in range(0, len(x) - SEGMENT_SAMPLES + 1, HOP_SAMPLES)]
    assert len(segs) == 2
    per_seg = []
    for seg in segs:  # an independent reading: normalise as §2.1 says, run the model, average each layer over time
        z = (seg - seg.mean()) / np.sqrt(seg.var() + 1e-7)
        with torch.inference_mode():
            hs = tiny.model(torch.tensor(z[None], dtype=torch.float32), output_hidden_states=True).hidden_states
        assert len(hs) == 13 and hs[0].shape == (1, 374, 32)  # 75 frames/s; the conv stem's receptive field trims one
        per_seg.append(np.stack([h[0].double().mean(0).numpy() for h in hs]))
    np.testing.assert_allclose(tiny.layer_features(x), np.mean(per_seg, 0), atol=2e-4)
    assert E.make_extractor(**tiny.settings()).fingerprint() == tiny.fingerprint()
    assert not tiny.embed(np.zeros(3 * SR)).any()  # silence: the zero vector


def test_batches_do_not_change_results(tiny_dir):
    x = music(10)
    a = E.MERTExtractor(tiny_dir, batch_size=1).layer_features(x)
    b = E.MERTExtractor(tiny_dir, batch_size=3).layer_features(x)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_pytorch_bin_legacy_names_and_prefix(tiny, tiny_dir, tmp_path):
    from safetensors.torch import load_file
    sd = load_file(str(tiny_dir / 'model.safetensors'))
    legacy = {}
    for k, v in sd.items():
        k = k.replace('.parametrizations.weight.original0', '.weight_g')
        k = k.replace('.parametrizations.weight.original1', '.weight_v')
        legacy['mert.' + k] = v
    legacy['mert.label_embs_concat'] = torch.zeros(3, 4)  # a MERT training head: ignored
    d = tmp_path / 'bin'
    d.mkdir()
    for f in ('config.json', 'preprocessor_config.json'):
        (d / f).write_text((tiny_dir / f).read_text())
    torch.save(legacy, d / 'pytorch_model.bin')
    other = E.MERTExtractor(d)
    x = music(5)
    np.testing.assert_allclose(other.embed(x), tiny.embed(x), atol=1e-6)


def test_mert_folder_errors(tiny_dir, tmp_path):
    with pytest.raises(MissingResourceError, match='no config.json'):
        E.MERTExtractor(tmp_path)
    with pytest.raises(MissingResourceError, match='no model folder'):
        E.make_extractor('mert')
    d = tmp_path / 'noweights'
    d.mkdir()
    (d / 'config.json').write_text((tiny_dir / 'config.json').read_text())
    with pytest.raises(MissingResourceError, match='no weights'):
        E.MERTExtractor(d)
    cfg = json.loads((tiny_dir / 'config.json').read_text())
    for key, value in (('feature_extractor_cqt', True), ('deepnorm', True), ('attention_relax', 32.0)):
        bad = tmp_path / key
        bad.mkdir()
        (bad / 'config.json').write_text(json.dumps({**cfg, key: value}))
        (bad / 'model.safetensors').write_bytes((tiny_dir / 'model.safetensors').read_bytes())
        with pytest.raises(ConfigError, match=key):
            E.MERTExtractor(bad)
    wide = tmp_path / 'wide'
    wide.mkdir()
    (wide / 'config.json').write_text(json.dumps({**cfg, 'hidden_size': 64}))
    (wide / 'model.safetensors').write_bytes((tiny_dir / 'model.safetensors').read_bytes())
    with pytest.raises(ConfigError, match='do not fit'):
        E.MERTExtractor(wide)
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'config.json').write_text('{not json')
    with pytest.raises(ConfigError, match='unreadable'):
        E.MERTExtractor(broken)
    rate = tmp_path / 'rate'
    rate.mkdir()
    for f in ('config.json', 'model.safetensors'):
        (rate / f).write_bytes((tiny_dir / f).read_bytes())
    (rate / 'preprocessor_config.json').write_text(json.dumps({'sampling_rate': 16000, 'do_normalize': True}))
    with pytest.raises(ConfigError, match='sampling_rate'):
        E.MERTExtractor(rate)
    with pytest.raises(InputError, match='unknown extractor'):
        E.make_extractor('vggish')


# --- folders, cache, resume ------------------------------------------------------------------------------------------

class Counting(E.LogMelExtractor):
    def __init__(self, fail_on=None, **kw):
        super().__init__(**kw)
        self.calls, self.fail_on = [], fail_on
    def embed(self, audio, *a, **k):
        if self.fail_on and str(audio).endswith(self.fail_on):
            raise KeyboardInterrupt
        self.calls.append(str(audio))
        return super().embed(audio, *a, **k)


def make_folder(root, n=3):
    (root / 'moods' / 'calm').mkdir(parents=True)
    for i in range(n):
        sub = root / 'moods' / 'calm' if i % 2 else root
        sf.write(sub / f't{i}.flac', music(2 + i, seed=i), SR)
    (root / '.hidden.wav').write_bytes(b'ignored')
    (root / 'notes.txt').write_text('not audio')
    return root


def test_embed_folder_ids_rows_and_cache(tmp_path):
    folder = make_folder(tmp_path / 'audio')
    ex = Counting()
    ids, X = E.embed_folder(folder, ex, cache_dir=tmp_path / 'cache', show_progress=False)
    assert ids == ['moods/calm/t1', 't0', 't2'] and X.shape == (3, 384) and X.dtype == np.float32
    for tid, row in zip(ids, X):
        np.testing.assert_allclose(row, E.LogMelExtractor().embed(folder / f'{tid}.flac'), atol=1e-6)
    assert len(ex.calls) == 3
    ids2, X2 = E.embed_folder(folder, ex, cache_dir=tmp_path / 'cache', show_progress=False)
    assert ids2 == ids and np.array_equal(X2, X) and len(ex.calls) == 3  # all from the cache
    entries = sorted((tmp_path / 'cache').rglob('*.npy'))
    assert len(entries) == 3 and not list((tmp_path / 'cache').rglob('*.tmp'))
    for e in entries:
        assert np.load(e, allow_pickle=False).shape == (384,)
    (folder / 't0.flac').rename(folder / 'renamed.flac')  # same bytes: still cached
    ids3, _ = E.embed_folder(folder, ex, cache_dir=tmp_path / 'cache', show_progress=False)
    assert 'renamed' in ids3 and len(ex.calls) == 3
    sf.write(folder / 't2.flac', music(3, seed=9), SR)  # new content: recomputed
    E.embed_folder(folder, ex, cache_dir=tmp_path / 'cache', show_progress=False)
    assert len(ex.calls) == 4
    other = Counting(n_mels=32)  # other settings: their own cache
    _, Y = E.embed_folder(folder, other, cache_dir=tmp_path / 'cache', show_progress=False)
    assert len(other.calls) == 3 and Y.shape == (3, 192)


def test_resume_after_interruption_and_damaged_entries(tmp_path):
    folder = make_folder(tmp_path / 'audio')
    first = Counting(fail_on='t2.flac')
    with pytest.raises(KeyboardInterrupt):
        E.embed_folder(folder, first, cache_dir=tmp_path / 'cache', show_progress=False)
    assert len(first.calls) == 2  # moods/calm/t1 and t0 were done before the interruption
    again = Counting()
    ids, X = E.embed_folder(folder, again, cache_dir=tmp_path / 'cache', show_progress=False)
    assert [c.rsplit('/', 1)[-1] for c in again.calls] == ['t2.flac'] and len(ids) == 3
    victim = sorted((tmp_path / 'cache').rglob('*.npy'))[0]
    victim.write_bytes(b'\x93NUMPY garbage')
    third = Counting()
    _, X3 = E.embed_folder(folder, third, cache_dir=tmp_path / 'cache', show_progress=False)
    assert len(third.calls) == 1 and np.allclose(X3, X, atol=1e-6)


def test_cache_off_default_and_errors(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / 'audio', n=2)
    monkeypatch.setenv('KELLY_CACHE', str(tmp_path / 'kc'))
    E.embed_folder(folder, E.LogMelExtractor(), show_progress=False)
    assert len(list((tmp_path / 'kc' / 'embed').rglob('*.npy'))) == 2
    ex = Counting()
    E.embed_folder(folder, ex, cache_dir=False, show_progress=False)
    E.embed_folder(folder, ex, cache_dir=False, show_progress=False)
    assert len(ex.calls) == 4
    (folder / 'broken.ogg').write_bytes(b'OggS' + bytes(64))
    with pytest.raises(InputError, match='broken.ogg'):
        E.embed_folder(folder, ex, cache_dir=False, show_progress=False)
    with pytest.warns(UserWarning, match='broken'):
        ids, _ = E.embed_folder(folder, ex, cache_dir=False, show_progress=False, on_error='skip')
    assert ids == ['moods/calm/t1', 't0']
    sf.write(folder / 't0.wav', music(1), SR)
    with pytest.raises(InputError, match='two files'):
        E.embed_folder(folder, ex, cache_dir=False, show_progress=False)
    (tmp_path / 'none').mkdir()
    with pytest.raises(InputError, match='no audio files'):
        E.embed_folder(tmp_path / 'none', ex, show_progress=False)
    with pytest.raises(InputError, match='not a folder'):
        E.embed_folder(tmp_path / 'nowhere', ex, show_progress=False)
    with pytest.raises(InputError, match='extractor'):
        E.embed_folder(folder, 'logmel', show_progress=False)


def test_progress_bar_draws_when_asked(tmp_path, monkeypatch, capsys):
    folder = make_folder(tmp_path / 'audio', n=1)
    monkeypatch.setenv('KELLY_PROGRESS', '1')
    E.embed_folder(folder, E.LogMelExtractor(), cache_dir=False)
    err = capsys.readouterr().err
    assert 'embedding (logmel)' in err and ' tracks/s]' in err and '1/1 [' in err and '<' in err  # rate and time left
    E.embed_folder(folder, E.LogMelExtractor(), cache_dir=False, show_progress=False)
    assert 'embedding' not in capsys.readouterr().err


def test_bench_tiny():
    recs = E.bench_embed(size='tiny')
    by = {(r['case'], r['metric']): r['value'] for r in recs}
    assert by[('logmel', 'audio_s_per_s')] > 0 and by[('mert tiny', 'audio_s_per_s')] > 0
    assert all(set(r) == {'case', 'metric', 'value', 'unit'} for r in recs)


def test_skipped_files_are_reported_with_their_reasons(tmp_path):
    folder = make_folder(tmp_path / 'audio', n=2)
    (folder / 'broken.ogg').write_bytes(b'OggS' + bytes(64))
    sf.write(folder / 'SHORT.AIFF', music(0.2), SR, format='AIFF')
    sf.write(folder / 't0.mp3', music(1), SR, format='MP3')  # a second file for track t0
    details = []
    ids, X = E.embed_folder(folder, E.LogMelExtractor(), cache_dir=False, show_progress=False, on_error='skip',
                            details=details)
    assert ids == ['moods/calm/t1', 't0'] and X.shape == (2, 384)
    skipped = {Path(d['path']).name: d['problem'] for d in details if d['status'] == 'skipped'}
    assert skipped == {'broken.ogg': 'not audio, or corrupt', 'SHORT.AIFF': 'audio too short',
                       't0.mp3': "two files for track 't0'"}
    assert E.other_files(folder) == {'.txt': 1}
    with pytest.raises(InputError, match="two files for track 't0'"):  # raised before anything is embedded
        E.embed_folder(folder, E.LogMelExtractor(), cache_dir=False, show_progress=False)


# --- extraction on workers (kelly.parallel) --------------------------------------------------------------------------

def _cache_state(cache):
    "Each cache entry's inode and modification time: a rewritten entry changes both."
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.rglob('*.npy')}


def test_workers_give_the_serial_result_bit_for_bit_and_write_each_entry_once(tmp_path):
    folder = make_folder(tmp_path / 'audio', n=4)
    ex = E.LogMelExtractor()
    serial_ids, serial = E.embed_folder(folder, ex, cache_dir=False, show_progress=False)
    cache = tmp_path / 'shared-cache'
    with pytest.raises(KeyboardInterrupt):  # an interrupted serial run leaves one whole entry of four
        E.embed_folder(folder, Counting(fail_on='t3.flac'), cache_dir=cache, show_progress=False)
    before = _cache_state(cache)
    assert len(before) == 1
    ids, X = E.embed_folder(folder, ex, cache_dir=cache, show_progress=False, scheduler='local')
    assert ids == serial_ids and X.dtype == np.float32 and np.array_equal(X, serial)   # bit for bit, input order
    after = _cache_state(cache)
    assert len(after) == 4 and {k: after[k] for k in before} == before   # old entries untouched, new ones written
    details = []
    ids2, X2 = E.embed_folder(folder, ex, cache_dir=cache, show_progress=False, scheduler='sync', details=details)
    assert ids2 == ids and np.array_equal(X2, serial) and _cache_state(cache) == after   # all read, none rewritten
    assert [d['status'] for d in details] == ['cached'] * 4
    assert not list(cache.rglob('*.tmp'))


def test_errors_from_workers_are_the_serial_errors(tmp_path):
    folder = make_folder(tmp_path / 'audio', n=2)
    (folder / 'broken.ogg').write_bytes(b'OggS' + bytes(64))
    sf.write(folder / 't0.mp3', music(1), SR, format='MP3')
    ex = E.LogMelExtractor()
    serial, sync = [], []
    a = E.embed_folder(folder, ex, cache_dir=False, show_progress=False, on_error='skip', details=serial)
    b = E.embed_folder(folder, ex, cache_dir=False, show_progress=False, on_error='skip', details=sync,
                       scheduler='sync')
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and serial == sync
    (folder / 't0.mp3').unlink()
    with pytest.raises(InputError) as here:
        E.embed_folder(folder, ex, cache_dir=False, show_progress=False)
    with pytest.raises(InputError) as there:
        E.embed_folder(folder, ex, cache_dir=False, show_progress=False, scheduler='sync')
    assert str(there.value) == str(here.value) and 'broken.ogg' in str(here.value)
    with pytest.raises(InputError, match='scheduler'):
        E.embed_folder(folder, ex, cache_dir=False, show_progress=False, scheduler='nowhere')


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 5_000), st.integers(1, 16), st.integers(1, 100))
def test_task_sizes_cover_the_files_once_and_shrink(n, workers, most):
    sizes = E.task_sizes(n, workers, most)
    assert sum(sizes) == n and all(1 <= s <= most for s in sizes)
    assert sizes == sorted(sizes, reverse=True)                          # the large tasks first, the small ones last
    left = n
    for s in sizes:                                                      # each takes its share of what is left
        assert s == min(most, -(-left // (2 * workers)))
        left -= s


def test_task_sizes_refuses_nonsense():
    with pytest.raises(InputError, match='workers'):
        E.task_sizes(10, 0)
    with pytest.raises(InputError, match='most'):
        E.task_sizes(10, 2, most=0)


def test_a_task_returns_entries_in_order_and_one_block(tmp_path):
    folder = make_folder(tmp_path / 'audio', n=3)
    (folder / 'bad.wav').write_bytes(b'RIFF' + bytes(40))
    paths = [folder / 't0.flac', folder / 'bad.wav', folder / 't2.flac']
    ex = E.LogMelExtractor()
    part = E.embed_files(paths, ex.settings(), cache=str(tmp_path / 'cache'), want_hash=False)
    assert [e['status'] for e in part['entries']] == ['embedded', 'skipped', 'embedded']
    assert part['vectors'].dtype == np.float32 and part['vectors'].shape == (3, ex.dim)
    assert np.array_equal(part['vectors'][0], ex.embed(paths[0])) and not part['vectors'][1].any()
    assert np.array_equal(part['vectors'][2], ex.embed(paths[2]))
    again = E.embed_files(paths, ex.settings(), cache=str(tmp_path / 'cache'), want_hash=False)
    assert [e['status'] for e in again['entries']] == ['cached', 'skipped', 'cached']   # one cache handle per task
    assert np.array_equal(again['vectors'], part['vectors'])


def test_many_files_in_shrinking_tasks_come_back_in_input_order(tmp_path):
    root = tmp_path / 'audio'
    root.mkdir()
    for i in range(13):
        sf.write(root / f'{i:02d}.flac', music(1, seed=i), SR)
    (root / '05.flac').write_bytes(b'fLaC' + bytes(30))                 # a bad file inside a multi-file task
    ex = E.LogMelExtractor()
    here, there = [], []
    a = E.embed_folder(root, ex, cache_dir=False, show_progress=False, on_error='skip', details=here)
    b = E.embed_folder(root, ex, cache_dir=False, show_progress=False, on_error='skip', details=there,
                       scheduler='sync')
    assert E.task_sizes(13, 1) == [7, 3, 2, 1]
    assert a[0] == b[0] == [f'{i:02d}' for i in range(13) if i != 5]
    assert np.array_equal(a[1], b[1]) and here == there


def test_a_worker_killed_mid_folder_costs_time_not_vectors(cluster, tmp_path):  # noqa: F811
    "A real scheduler and two `dask worker` processes (tests/test_parallel.py's fixture); one dies during the run."
    from kelly.parallel import dask_client
    address, procs = cluster
    root = tmp_path / 'audio'
    root.mkdir()
    x = music(30, seed=1)
    for i in range(40):   # distinct bytes (a gain per file), so that every file has its own cache entry
        sf.write(root / f'{i:02d}.wav', x * (1 - i / 100), SR, subtype='FLOAT')
    ex = E.LogMelExtractor()
    serial_ids, serial = E.embed_folder(root, ex, cache_dir=False, show_progress=False)
    cache = tmp_path / 'cache'
    with dask_client(address) as client:
        client.wait_for_workers(2, timeout=120)
        ids, X = kill_a_worker_mid_run(lambda: E.embed_folder(root, ex, cache_dir=cache, show_progress=False,
                                                              scheduler=client),
                                       begun=lambda: list(cache.rglob('*.npy')), worker=procs[1])
        assert len(client.scheduler_info()['workers']) == 1
    assert ids == serial_ids and np.array_equal(X, serial)                  # identical, in input order
    entries = list(cache.rglob('*.npy'))
    assert len(entries) == 40 and not list(cache.rglob('*.tmp'))            # every vector once, complete
    row = {E.file_sha256(root / f'{i:02d}.wav'): i for i in range(40)}
    assert all(np.array_equal(np.load(p), serial[row[p.stem]]) for p in entries)    # each the file's own vector
