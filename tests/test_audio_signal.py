"""Tests of kelly.audio.signal: formats, mono mix, resampling, §1.3 segments, log-mel, and the errors for bad audio."""
import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings, strategies as st

from kelly.core import InputError, KellyError
from kelly.audio.signal import (HOP_SAMPLES, SAMPLE_RATE, SEGMENT_SAMPLES, check_waveform, is_silent, load_24k,
                                load_audio, log_mel, mel_filterbank, n_segments, resample, segments, to_24k, to_mono)


def tone(freq, seconds, sr, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * sr / len(x)


@pytest.mark.parametrize('suffix,fmt,subtype,sr', [('.wav', 'WAV', 'PCM_16', 44_100), ('.wav', 'WAV', 'FLOAT', 22_050),
                                                   ('.flac', 'FLAC', 'PCM_24', 48_000),
                                                   ('.ogg', 'OGG', 'VORBIS', 44_100), ('.opus', 'OGG', 'OPUS', 48_000),
                                                   ('.mp3', 'MP3', 'MPEG_LAYER_III', 44_100),
                                                   ('.MP3', 'MP3', 'MPEG_LAYER_III', 24_000),
                                                   ('.aiff', 'AIFF', 'PCM_16', 44_100),
                                                   ('.AIF', 'AIFF', 'PCM_24', 22_050),
                                                   ('.WAV', 'WAV', 'PCM_16', 8_000)])
def test_formats_round_trip(tmp_path, suffix, fmt, subtype, sr):
    if fmt not in sf.available_formats():
        pytest.skip(f'this libsndfile cannot write {fmt}')  # MP3 needs libsndfile >= 1.1
    x = np.stack([tone(440, 1.0, sr), tone(440, 1.0, sr)], axis=1)
    p = tmp_path / f'a{suffix}'
    sf.write(p, x, sr, format=fmt, subtype=subtype)
    y, got_sr = load_audio(p)
    assert got_sr == sr and y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(x)) < 0.05 * sr  # lossy codecs may pad or trim a little
    assert abs(dominant_hz(y[sr // 10: -sr // 10], sr) - 440) < 3
    z = load_24k(p)
    assert abs(len(z) - len(y) * SAMPLE_RATE / sr) <= 2
    assert abs(dominant_hz(z[2400:-2400], SAMPLE_RATE) - 440) < 3


def test_stereo_is_the_mean_of_channels(tmp_path):
    sr = 16_000
    left, right = tone(300, 1, sr), tone(700, 1, sr, amp=0.25)
    sf.write(tmp_path / 's.wav', np.stack([left, right], 1), sr, subtype='FLOAT')
    y, _ = load_audio(tmp_path / 's.wav')
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)
    three = np.stack([left, right, left], 1)
    np.testing.assert_allclose(to_mono(three), three.mean(1), atol=1e-6)


def test_bad_files_raise_input_errors_naming_the_file(tmp_path):
    (tmp_path / 'empty.wav').write_bytes(b'')
    (tmp_path / 'notes.txt').write_text('hello, not audio')
    good = tmp_path / 'good.wav'
    sf.write(good, tone(440, 1, 8000), 8000)
    (tmp_path / 'cut.wav').write_bytes(good.read_bytes()[:30])  # a header cut short: corrupt
    (tmp_path / 'junk.flac').write_bytes(b'fLaC' + bytes(range(256)) * 4)
    for name, problem in [('empty.wav', 'empty file'), ('notes.txt', 'not audio'), ('cut.wav', 'not audio'),
                          ('junk.flac', 'not audio'), ('missing.wav', 'no such file')]:
        with pytest.raises(InputError, match=problem) as e:
            load_audio(tmp_path / name)
        assert name in str(e.value) and 'Fix:' in str(e.value)
    with pytest.raises(InputError, match='not a file'):
        load_audio(tmp_path)


def test_no_samples_nan_and_too_short(tmp_path):
    sf.write(tmp_path / 'zero.wav', np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(InputError, match='empty audio'):
        load_audio(tmp_path / 'zero.wav')
    x = tone(440, 1, 8000)
    x[123] = np.nan
    sf.write(tmp_path / 'nan.wav', x, 8000, subtype='FLOAT')
    with pytest.raises(InputError, match='NaN or infinite') as e:
        load_audio(tmp_path / 'nan.wav')
    assert 'first at 123' in str(e.value)
    x[123] = np.inf
    with pytest.raises(InputError, match='NaN or infinite'):
        check_waveform(x, 8000)
    sf.write(tmp_path / 'short.wav', tone(440, 0.1, 8000), 8000)
    with pytest.raises(InputError, match='too short'):
        load_audio(tmp_path / 'short.wav')
    with pytest.raises(InputError, match='sr'):
        check_waveform(x, 0)
    with pytest.raises(InputError, match='not a waveform'):
        check_waveform(np.array(['a', 'b']), 8000)


def test_silence_loads_and_is_recognised(tmp_path):
    sf.write(tmp_path / 'quiet.flac', np.zeros(16_000, np.float32), 16_000)
    y, sr = load_audio(tmp_path / 'quiet.flac')
    assert is_silent(y) and not is_silent(tone(440, 1, 8000))
    assert is_silent(np.full(10, 1e-7)) and not is_silent(np.full(10, 1e-5))


def test_resampling_keeps_tones_and_removes_aliases():
    y = to_24k(tone(1000, 1, 44_100), 44_100)
    assert len(y) == 24_000 and abs(dominant_hz(y[1000:-1000], 24_000) - 1000) < 2
    assert np.abs(to_24k(tone(15_000, 1, 44_100), 44_100)[1000:-1000]).max() < 1e-3  # above 12 kHz: removed, not folded
    up = resample(tone(440, 1, 16_000), 16_000, 24_000)
    assert len(up) == 24_000 and abs(dominant_hz(up[1000:-1000], 24_000) - 440) < 2
    x = tone(440, 1, 24_000)
    assert resample(x, 24_000, 24_000) is not None and np.array_equal(resample(x, 24_000, 24_000), x)
    with pytest.raises(InputError):
        resample(x, -1, 24_000)
    with pytest.raises(InputError):
        resample(x, 24_000, 24_000, quality='best')


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=120_000, max_value=700_000))
def test_segments_follow_the_spec_formula(n):
    x = np.arange(n, dtype=np.float32)
    segs = segments(x)
    expected = (n - SEGMENT_SAMPLES) // HOP_SAMPLES + 1
    assert segs.shape == (expected, SEGMENT_SAMPLES) == (n_segments(n), SEGMENT_SAMPLES)
    for i in (0, expected - 1):
        np.testing.assert_array_equal(segs[i], x[i * HOP_SAMPLES: i * HOP_SAMPLES + SEGMENT_SAMPLES])
    assert segs[-1, -1] <= n - 1 < segs[-1, -1] + HOP_SAMPLES  # the dropped tail is shorter than a hop


def test_short_audio_rule():
    x = np.linspace(-1, 1, 70_000, dtype=np.float32)
    padded = segments(x)
    assert padded.shape == (1, SEGMENT_SAMPLES)
    np.testing.assert_array_equal(padded[0, :70_000], x)
    assert not padded[0, 70_000:].any()
    np.testing.assert_array_equal(segments(x, short='keep'), x[None])
    with pytest.raises(InputError, match='shorter than one segment'):
        segments(x, short='error')
    assert n_segments(70_000) == 1 and n_segments(0) == 0
    with pytest.raises(InputError):
        segments(np.zeros((2, 200_000), np.float32))
    with pytest.raises(InputError):
        segments(x, short='loop')


def test_log_mel_against_a_plain_loop():
    rng = np.random.default_rng(3)
    x = rng.normal(size=5_000).astype(np.float32)
    n_fft, hop, n_mels, sr = 512, 160, 20, 16_000
    fb = mel_filterbank(sr, n_fft, n_mels, 50, 7000)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    cols = []
    for start in range(0, len(x) - n_fft + 1, hop):
        p = np.abs(np.fft.rfft(x[start:start + n_fft] * win)) ** 2
        cols.append([10 * np.log10(max(sum(fb[m, k] * p[k] for k in range(len(p))), 1e-10)) for m in range(n_mels)])
    ref = np.array(cols).T
    got = log_mel(x, sr, n_fft, hop, n_mels, 50, 7000)
    np.testing.assert_allclose(got, ref, atol=1e-3)
    batch = log_mel(np.stack([x, 2 * x]), sr, n_fft, hop, n_mels, 50, 7000)
    np.testing.assert_allclose(batch[1] - batch[0], 10 * np.log10(4), atol=1e-3)


def test_mel_filterbank_shape_and_coverage():
    fb = mel_filterbank(24_000, 1024, 64, 0, 12_000)
    assert fb.shape == (64, 513) and fb.max() <= 1 + 1e-6
    assert (fb.sum(0)[1:-1] > 0).all()
    with pytest.raises(InputError):
        mel_filterbank(24_000, 1024, 64, 100, 20_000)


def test_errors_are_kelly_errors():
    with pytest.raises(KellyError):
        log_mel(np.array([np.nan] * 4000, np.float32))
    with pytest.raises(InputError, match='shorter than one frame'):
        log_mel(np.zeros(100, np.float32))
