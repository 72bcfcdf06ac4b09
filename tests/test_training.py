"kelly.training under torchrun: two gloo processes on CPU agree with one process on the same global batches."
import json, os, subprocess, sys, textwrap
from pathlib import Path

import torch
from torch import nn

BIN = Path(sys.executable).parent

SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from torch import nn
    from kelly.training import Trainer, dist_info
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(150, 6, generator=g); y = (X[:, :2].sum(1, keepdim=True) > 0).float()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    # batch 25 over 120 training rows: shards of 13 and 12 rows, and a last batch of 20: the loss scaling must be exact
    Trainer(net, nn.functional.binary_cross_entropy_with_logits, epochs=2, batch_size=25, seed=5).fit((X, y))
    rank, world = dist_info()
    out = {k: v.tolist() for k, v in net.state_dict().items()}
    json.dump(dict(rank=rank, world=world, params=out), open(sys.argv[1] + f'/rank{rank}_of{world}.json', 'w'))
''')


def _run(args, tmp_path, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')}
    env.update(OMP_NUM_THREADS='1', KELLY_PROGRESS='0', **(env_extra or {}))
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _params(path):
    return {k: torch.tensor(v) for k, v in json.loads(Path(path).read_text())['params'].items()}


def test_ddp_two_processes_match_one(tmp_path):
    script = tmp_path / 'train.py'
    script.write_text(SCRIPT)
    _run([sys.executable, str(script), str(tmp_path)], tmp_path)
    _run([str(BIN / 'torchrun'), '--nproc_per_node', '2', '--master_port', '29517', str(script), str(tmp_path)], tmp_path)
    single = _params(tmp_path / 'rank0_of1.json')
    r0, r1 = _params(tmp_path / 'rank0_of2.json'), _params(tmp_path / 'rank1_of2.json')
    for k in single:
        assert torch.equal(r0[k], r1[k]), k  # DDP keeps the replicas identical
        assert torch.allclose(r0[k], single[k], atol=1e-6, rtol=0), (k, (r0[k] - single[k]).abs().max())
    # training did move the weights away from their initial values (the check above is not vacuous)
    torch.manual_seed(0)
    start = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1)).state_dict()
    assert max(float((single[k] - start[k]).abs().max()) for k in single) > 1e-3


def test_sample_weights_keep_zero_weight_rows_out_of_training():
    "Rows with weight 0 are never drawn: corrupted targets on them do not reach the model, unlike without weights."
    import numpy as np
    from kelly.training import Trainer
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
