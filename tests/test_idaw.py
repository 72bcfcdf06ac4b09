"kelly.music.idaw: the spec's sizes, streaming against whole sequences, gradient checkpointing, finding the weights."
import numpy as np
import pytest
import torch

from conftest import seeded_idaw_models
from kelly.music import idaw
from kelly.music.idaw import MODELS, IDAWPipeline, emotion_code
from kelly.core import InputError, MissingResourceError

EPOCHS_IN_KEY = 12
SPEC = dict(EmotionRecognizer=403_264, MelodyTransformer=641_664, HarmonyPredictor=74_176, DynamicsEngine=13_520,
            GroovePredictor=18_656)


@pytest.mark.parametrize('name', list(SPEC))
def test_parameter_count(name):
    assert sum(p.numel() for p in MODELS[name]().parameters()) == SPEC[name]


def test_total_and_shapes():
    assert sum(m().n_parameters() for m in MODELS.values()) == 1_151_280
    shapes = dict(EmotionRecognizer=(128, 64), MelodyTransformer=(64, 128), HarmonyPredictor=(128, 64),
                  DynamicsEngine=(32, 16), GroovePredictor=(64, 32))
    for name, (i, o) in shapes.items():
        x = torch.randn(2, 3, i)
        assert MODELS[name]()(x).shape == (2, 3, o)


def test_streaming_matches_sequence():
    torch.manual_seed(0)
    mt = MODELS['MelodyTransformer']().eval()
    x = torch.randn(3, 7, 64)
    full, (h, c) = mt.sequence(x)
    s = (torch.zeros(3, 256), torch.zeros(3, 256))
    outs = []
    for t in range(7):
        y, s = mt.step(x[:, t], s)
        outs.append(y)
    assert torch.allclose(torch.stack(outs, 1), full, atol=1e-5)
    assert torch.allclose(s[1], c[0], atol=1e-5)


def test_pipeline_reset_and_state():
    torch.manual_seed(1)
    pipe = IDAWPipeline().reset(batch=2)
    codes = emotion_code(torch.rand(2, 5, 3) * 2 - 1)
    a = pipe.run(codes=codes)
    b = pipe.run(codes=codes)  # the state carries on: a second pass differs
    assert not torch.allclose(a['notes'], b['notes'])
    pipe.reset(batch=2)
    c = pipe.run(codes=codes)  # reset restores the first pass
    assert torch.equal(a['notes'], c['notes']) and torch.equal(a['chords'], c['chords'])
    assert torch.allclose(a['chords'].sum(-1), torch.ones(2, 5), atol=1e-5)
    assert ((a['expression'] >= 0) & (a['expression'] <= 1)).all() and (a['groove'].abs() <= 1).all()
    state = pipe.state  # named for what each entry holds
    assert set(state) == {'emotion_lstm', 'melody_lstm', 'chord', 'note', 'key', 'tempo_density'}
    lstm_shapes = [tuple(t.shape) for t in state['emotion_lstm'] + state['melody_lstm']]
    assert lstm_shapes == [(2, 128), (2, 128), (2, 256), (2, 256)]  # (h, c) of each network's LSTM
    pipe.reset(batch=2, tempo=120.0, density=2.0)
    assert torch.allclose(pipe.state['tempo_density'], torch.tensor([[0.6, 0.5], [0.6, 0.5]]))


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(2)
    x = torch.randn(4, 6, 128)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(3)
        m = MODELS['EmotionRecognizer']().gradient_checkpointing(ckpt).train()
        m(x).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for g0, g1 in zip(*grads):
        assert torch.allclose(g0, g1, atol=1e-6)


# --- trained by default: one place resolves the weights (issue 20, point 1)

def _same(a, b):
    pairs = zip(a['MelodyTransformer'].state_dict().values(), b['MelodyTransformer'].state_dict().values())
    return all(torch.equal(x, y) for x, y in pairs)


def test_resolve_weights_order(tmp_path, places):
    assert places['report'] == tmp_path / 'reports' / 'artifacts' / 'idaw' / 'weights'
    assert places['cache'] == tmp_path / 'cache' / 'idaw' / 'weights'
    nets = {s: seeded_idaw_models(s) for s in (11, 12, 13)}
    with pytest.raises(MissingResourceError, match='kelly report idaw'):
        idaw.resolve_weights()
    idaw.save_models(nets[11], places['cache'])
    got, where = idaw.resolve_weights()
    assert where == dict(folder=str(places['cache']), source='cache', untrained=[]) and _same(got, nets[11])
    idaw.save_models(nets[12], places['report'])
    got, where = idaw.resolve_weights()
    assert where['source'] == 'report' and _same(got, nets[12]) and not _same(got, nets[11])
    mine = idaw.save_models(nets[13], tmp_path / 'mine')
    got, where = idaw.resolve_weights(mine)
    assert where == dict(folder=str(mine), source='weights', untrained=[]) and _same(got, nets[13])
    (places['report'] / 'GroovePredictor.safetensors').unlink()  # an incomplete default place is passed over
    assert idaw.resolve_weights()[1]['source'] == 'cache'


def test_resolve_weights_refuses_misspelled_or_incomplete_folder(tmp_path, places):
    d = idaw.save_models(seeded_idaw_models(1), tmp_path / 'weights')
    with pytest.raises(InputError, match='wieghts'):
        idaw.resolve_weights(tmp_path / 'wieghts')
    with pytest.raises(InputError, match='wieghts'):
        idaw.load_models(tmp_path / 'wieghts')
    (d / 'GroovePredictor.safetensors').unlink()
    (d / 'DynamicsEngine.safetensors').unlink()
    with pytest.raises(InputError, match=r'lacks DynamicsEngine\.safetensors, GroovePredictor\.safetensors'):
        idaw.resolve_weights(d)


def test_untrained_only_when_asked_and_with_a_warning(places):
    with pytest.raises(MissingResourceError, match='allow-untrained'):
        idaw.resolve_weights()
    with pytest.warns(UserWarning, match='untrained'):
        models, where = idaw.resolve_weights(allow_untrained=True)
    assert where == dict(folder=None, source='untrained', untrained=list(MODELS), warning=where['warning'])
    assert 'kelly report idaw' in where['warning'] and idaw.warnings_said([], where) == [where['warning']]
    assert _same(models, idaw.untrained_models())


def test_never_reads_the_shared_tmp_artifacts(tmp_path, places, monkeypatch):
    import tempfile
    from kelly.core import artifacts_dir
    from kelly.music.rtneural import idaw_weights
    monkeypatch.delenv('KELLY_ARTIFACTS', raising=False)
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # /tmp/kelly-artifacts becomes tmp_path/kelly-artifacts
    shared = idaw.save_models(seeded_idaw_models(2), artifacts_dir('idaw') / 'weights')
    assert shared == tmp_path / 'kelly-artifacts' / 'idaw' / 'weights' and not idaw.missing_weights(shared)
    with pytest.raises(MissingResourceError):
        idaw.resolve_weights()
    with pytest.raises(MissingResourceError):
        idaw_weights()
    monkeypatch.setenv('KELLY_ARTIFACTS', str(tmp_path / 'kelly-artifacts'))  # nor an unpublished artifacts folder
    with pytest.raises(MissingResourceError):
        idaw.resolve_weights()


def test_step_and_run_are_methods_only():
    assert 'step' not in idaw.__all__ and 'run' not in idaw.__all__  # not exported as bare names
    assert IDAWPipeline.step.__qualname__ == 'IDAWPipeline.step' and IDAWPipeline.run.__qualname__ == 'IDAWPipeline.run'


def test_mel_frames_use_the_one_filterbank():
    "The beat's log-mel is kelly.audio.signal's filterbank on its power spectrum (one implementation of the mel scale)."
    from kelly.audio.signal import mel_filterbank, power_spectrogram
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(4096).astype(np.float32)
    mel = power_spectrogram(audio, 1024, 256) @ mel_filterbank(8000, 1024, 128, fmin=30.0).T
    assert np.allclose(idaw.mel_frames(audio, 8000, 1), (np.log10(mel.mean(0) + 1e-6) + 2) / 4, atol=1e-5)
    tone = lambda hz: np.sin(2 * np.pi * hz * np.arange(8000) / 8000).astype(np.float32)
    peaks = idaw.mel_frames(np.r_[tone(220.0), tone(880.0)], 8000, 2).argmax(1)
    assert peaks[0] < peaks[1]  # the loudest bin rises with pitch


def test_the_melody_network_learns_the_key():
    "The networks' own in-key probability mass (no mask): near chance untrained, above it after training on chorales."
    from kelly.core import limit_threads
    from kelly.music.theory import chorale_features, scale_pitch_classes
    feats = chorale_features(4)
    def in_key_mass(model, f):
        pt = idaw.piece_tensors(f)
        with torch.inference_mode():
            p = torch.softmax(model.logits(pt['embedding'][None])[0], -1)
        scale = torch.tensor([n % 12 in scale_pitch_classes(f['tonic'], f['mode']) for n in range(128)])
        return float(p[:, scale].sum(-1).mean())
    with limit_threads(1):
        data = idaw.training_tensors(feats[:3], window=8)
        trained, _ = idaw.train_idaw({'MelodyTransformer': data['MelodyTransformer']}, epochs=EPOCHS_IN_KEY)
    untrained = in_key_mass(MODELS['MelodyTransformer']().eval(), feats[3])
    assert abs(untrained - 7 / 12) < 0.05
    assert in_key_mass(trained['MelodyTransformer'], feats[3]) > untrained + 0.03  # 0.64 against 0.59 after 12 epochs
