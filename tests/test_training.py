"""kelly.training: data parallelism and pipeline parallelism under torchrun (two gloo processes on CPU agree with one
process), and the defects of issue 25 (NaN inputs, restore_best without an improvement, tuple outputs, min_delta)."""
import json, math, os, socket, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import kelly.training as training
from kelly.training import Trainer, TrainingError

BIN = Path(sys.executable).parent

SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from torch import nn
    from kelly.training import Trainer, dist_info
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(150, 6, generator=g)
    y = (X[:, :2].sum(1, keepdim=True) > 0).float()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    # batch 25 over 120 training rows: shards of 13 and 12 rows, and a last batch of 20: the loss scaling must be exact
    Trainer(net, nn.functional.binary_cross_entropy_with_logits, epochs=2, batch_size=25, seed=5).fit((X, y))
    rank, world = dist_info()
    out = {k: v.tolist() for k, v in net.state_dict().items()}
    json.dump(dict(rank=rank, world=world, params=out), open(sys.argv[1] + f'/rank{rank}_of{world}.json', 'w'))
''')

PIPELINE_SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from torch import nn
    from kelly.training import Pipeline
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(32, 6, generator=g), torch.randn(32, 1, generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    pipe = Pipeline(net, nn.functional.mse_loss, n_microbatches=4)
    loss = pipe.step(X, y)
    grads = {k: p.grad.tolist() for k, p in net.named_parameters() if p.grad is not None}
    out = dict(rank=pipe.rank, loss=loss, grads=grads, layers=len(pipe.module))
    json.dump(out, open(sys.argv[1] + f'/pipe{pipe.rank}.json', 'w'))
''')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run(args, tmp_path):
    drop = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(OMP_NUM_THREADS='1', KELLY_PROGRESS='0')
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _torchrun(script, tmp_path):
    return [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
            '--master_port', str(_free_port()), str(script), str(tmp_path)]


def _params(path):
    return {k: torch.tensor(v) for k, v in json.loads(Path(path).read_text())['params'].items()}


def test_ddp_two_processes_match_one(tmp_path):
    script = tmp_path / 'train.py'
    script.write_text(SCRIPT)
    _run([sys.executable, str(script), str(tmp_path)], tmp_path)
    _run(_torchrun(script, tmp_path), tmp_path)
    single = _params(tmp_path / 'rank0_of1.json')
    r0, r1 = _params(tmp_path / 'rank0_of2.json'), _params(tmp_path / 'rank1_of2.json')
    for k in single:
        assert torch.equal(r0[k], r1[k]), k  # DDP keeps the replicas identical
        assert torch.allclose(r0[k], single[k], atol=1e-6, rtol=0), (k, (r0[k] - single[k]).abs().max())
    # training did move the weights away from their initial values (the check above is not vacuous)
    torch.manual_seed(0)
    start = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1)).state_dict()
    assert max(float((single[k] - start[k]).abs().max()) for k in single) > 1e-3


def test_pipeline_two_stages_give_the_gradients_of_one_process(tmp_path):
    "GPipe over two gloo processes, four micro-batches: each stage's gradients equal plain autograd's on the batch."
    script = tmp_path / 'pipe.py'
    script.write_text(PIPELINE_SCRIPT)
    _run(_torchrun(script, tmp_path), tmp_path)
    ranks = [json.loads((tmp_path / f'pipe{r}.json').read_text()) for r in (0, 1)]
    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(32, 6, generator=g), torch.randn(32, 1, generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    loss = nn.functional.mse_loss(net(X), y)
    loss.backward()
    assert [r['layers'] for r in ranks] == [3, 2]
    assert set(ranks[0]['grads']).isdisjoint(ranks[1]['grads'])   # each process holds only its own stage
    piped = {**ranks[0]['grads'], **ranks[1]['grads']}
    assert set(piped) == {k for k, _ in net.named_parameters()}
    for k, p in net.named_parameters():
        assert torch.allclose(torch.tensor(piped[k]), p.grad, atol=1e-6, rtol=0), k
        assert float(p.grad.abs().max()) > 1e-4, k                  # not vacuous: every stage has real gradients
    for r in ranks:
        assert math.isclose(r['loss'], float(loss.detach()), rel_tol=1e-6)


def test_sample_weights_keep_zero_weight_rows_out_of_training(torch_one_thread):
    "Rows with weight 0 are never drawn: corrupted targets on them do not reach the model, unlike without weights."
    g = torch.Generator().manual_seed(4)
    X = torch.randn(400, 3, generator=g)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]])
    y_bad = y.clone()
    y_bad[::4] = 50.0  # a quarter of the rows corrupted
    w = np.ones(400)
    w[::4] = 0.0
    def run(weights):
        torch.manual_seed(0)
        net = nn.Linear(3, 1)
        trainer = Trainer(net, nn.functional.mse_loss, epochs=30, batch_size=40, lr=0.05, min_lr=0.05, patience=100)
        trainer.fit((X, y_bad), sample_weights=weights)
        with torch.no_grad():
            return float(nn.functional.mse_loss(net(X[1::4]), y[1::4]))
    assert run(w) < 0.05 < run(None)


def _toy(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    return X, X.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def test_methods_live_on_the_trainer():
    "fit, resume and restore_best are Trainer methods, not bare module functions (issue 25)."
    for name in ('fit', 'resume', 'restore_best'):
        assert name not in training.__all__, name
        assert getattr(Trainer, name).__qualname__ == f'Trainer.{name}'


def test_nan_inputs_are_refused_before_training(torch_one_thread):
    X, y = _toy()
    X[5, 1] = float('nan')
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(Exception, match='row 5'):
        Trainer(net, nn.functional.mse_loss, epochs=3).fit((X, y))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_a_loss_that_stops_being_finite_stops_training(torch_one_thread):
    X, y = _toy()
    with pytest.raises(TrainingError, match='not finite at epoch 0'):
        Trainer(_net(), lambda out, t: nn.functional.mse_loss(out, t) * math.inf, epochs=3).fit((X, y))


def test_restore_best_refuses_when_no_epoch_improved():
    with pytest.raises(TrainingError, match='no epoch has improved'):
        Trainer(_net(), nn.functional.mse_loss).restore_best()


def test_tuple_and_dict_outputs_reach_the_loss(torch_one_thread):
    "A VAE-like model returning (reconstruction, {'mu', 'var'}) trains without packing its outputs into one tensor."
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.mu = _net(), nn.Linear(4, 2)
        def forward(self, x):
            return self.body(x), dict(mu=self.mu(x))
    def loss(out, y):
        return nn.functional.mse_loss(out[0], y) + 1e-3 * out[1]['mu'].pow(2).mean()
    rows = dict(mu_rows=lambda out, y: len(out[1]['mu']))
    hist = Trainer(Net(), loss, epochs=4, batch_size=16, metrics=rows).fit(_toy())
    assert hist[-1]['val_loss'] < hist[0]['val_loss']
    assert hist[-1]['mu_rows'] == round(0.2 * 128)   # the validation batches' outputs joined, dict inside the tuple


def test_relative_min_delta_is_scale_free(torch_one_thread):
    "With relative_delta the epoch early stopping stops at does not move when the loss is multiplied by 1000."
    def epochs_run(scale, **settings):
        loss = lambda out, y: scale * nn.functional.mse_loss(out, y)
        trainer = Trainer(_net(), loss, epochs=40, lr=3e-3, patience=2, min_delta=0.05, clip_norm=None, batch_size=16,
                          **settings)
        return len(trainer.fit(_toy()))
    assert epochs_run(1.0, relative_delta=True) == epochs_run(1000.0, relative_delta=True)
    assert epochs_run(1.0) < epochs_run(1000.0)
