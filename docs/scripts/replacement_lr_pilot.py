"""Pilot (REPRODUCTION.md Table 3): which attacker lr keeps the replacement attacker's model accurate at 300 steps (MNIST5k).

Run: PYTHONPATH=. python docs/scripts/replacement_lr_pilot.py BASE_STEPS LR [LR ...] (REPRODUCTION: 200 0.1 0.05 0.02 0.01; 600 0.005 0.002 0.001)
"""
import torch, json, sys
torch.set_num_threads(1)
from fl_lightning.data import MNIST5k
from fl_lightning.data.datamodule import FederatedDataModule
from fl_lightning.attacks import PixelBackdoor
from fl_lightning.context import SetupContext
from fl_lightning.engines.batches import epoch_batches
from fl_lightning.evaluation import evaluate
from fl_lightning.models import PaperCNN

dm = FederatedDataModule(MNIST5k(), num_clients=10, partition="dirichlet", alpha=0.9, train_fraction=0.7, seed=0)
dm.setup()
atk = PixelBackdoor(target=2, pattern="square", size=3, location="top-left", value=2.8215, poison_per_batch=20,
                    clients=[0], extra_epochs=0, lr=0.1)
atk.setup(SetupContext(num_clients=10, num_rounds=12, seed=0, client_targets=[c.targets for c in dm.clients],
                       num_classes=10, input_shape=(1, 28, 28)))
# a proxy for the round-6 global model: plain SGD on the pooled clean data
torch.manual_seed(0)
base = PaperCNN(lr=0.01, momentum=0.5)
pool = [c for c in dm.clients]
opt = torch.optim.SGD(base.parameters(), lr=0.01, momentum=0.5)
g = torch.Generator().manual_seed(0)
for step in range(int(sys.argv[1])):
    c = pool[step % 10]
    (idx,) = epoch_batches(len(c), 64, 1, g)
    x, y = next(iter(c.batches([idx])))
    loss = base.loss(base(x), y); opt.zero_grad(); loss.backward(); opt.step()
print("base", evaluate(base, dm.test, [atk]), flush=True)
state = {k: v.clone() for k, v in base.state_dict().items()}
data = dm.clients[0]
print("attacker holds", len(data))
for lr in [float(v) for v in sys.argv[2:]]:
    m = PaperCNN(lr=0.01, momentum=0.5); m.load_state_dict(state)
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.5)
    g = torch.Generator().manual_seed(1); done = 0
    while done < 300:
        for idx in epoch_batches(len(data), 64, 300 - done, g):
            x, y = next(iter(data.batches([idx])))
            x, y = atk.poison_batch(0, x, y, g)
            loss = m.loss(m(x), y); opt.zero_grad(); loss.backward(); opt.step(); done += 1
    print(lr, evaluate(m, dm.test, [atk]), flush=True)
