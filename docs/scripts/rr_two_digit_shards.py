"""Why residual reweighting pays on two-digit shards: one quickstart-like round of honest updates (REPRODUCTION.md).

Trains 24 FedAvg rounds on the quickstart split (no attack), then compares residual reweighting with the plain
mean on the 25th round's updates, per layer and per output row. Run: PYTHONPATH=. python docs/scripts/rr_two_digit_shards.py
"""
import torch, copy
torch.set_num_threads(1)
from fl_lightning import FederatedDataModule
from fl_lightning.data import MNIST5k
from fl_lightning.models import PaperCNN
from fl_lightning.aggregators.functional import residual_reweight_details
torch.manual_seed(0)
dm = FederatedDataModule(MNIST5k(), num_clients=100, partition="classes", classes_per_client=2, seed=0); dm.setup()
model = PaperCNN(lr=0.05, momentum=0.5)
names = [n for n, _ in model.named_parameters()]
print([(n, tuple(p.shape)) for n, p in model.named_parameters()])
flat = lambda m: torch.cat([p.detach().reshape(-1) for p in m.parameters()])
g = flat(model)
def local(m, data):
    m = copy.deepcopy(m); opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.5)
    x, y = data.inputs, data.targets
    for _ in range(5):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 128):
            idx = perm[i:i+128]; opt.zero_grad(); torch.nn.functional.cross_entropy(m(x[idx]), y[idx]).backward(); opt.step()
    return flat(m) - g
# warm the model a few FedAvg rounds so it is not at init (as around round 20 of the quickstart)
rng = torch.Generator().manual_seed(1)
for r in range(25):
    ids = torch.randperm(100, generator=rng)[:10].tolist()
    U = torch.stack([local(model, dm.clients[i]) for i in ids])
    upd = U.mean(0) if r < 24 else None
    if upd is not None:
        off = 0
        for p in model.parameters():
            p.data += upd[off:off+p.numel()].view_as(p); off += p.numel()
        g = flat(model)
digits = [sorted(set(dm.clients[i].targets.tolist())) for i in ids]
print("sampled clients' digits", digits)
for variant in ("reference", "paper"):
    d = residual_reweight_details(U, lambda_=2.0, thresh=0.1, variant=variant)
    mean = U.mean(0)
    print(variant, "replaced", round(d.replaced_fraction, 3), "weights", [round(w, 3) for w in d.client_weights.tolist()])
    # output layer: last weight matrix [10, H] and bias [10]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    W = d.aggregate[starts[-2]:starts[-1]].view(shapes[-2]); M = mean[starts[-2]:starts[-1]].view(shapes[-2])
    holders = {c: sum(c in dg for dg in digits) for c in range(10)}
    ratio = {c: round(float((W[c] @ M[c]) / (M[c] @ M[c])), 2) for c in range(10)}
    print("  output row c: holders among the 10 sampled -> RR projection on the mean's row / mean's row:",
          {c: (holders[c], ratio[c]) for c in range(10)})
    for i, (n, s, l) in enumerate(zip(names, starts, sizes)):
        a, m = d.aggregate[s:s+l], mean[s:s+l]
        print(f"  {n}: |RR|/|mean| {float(a.norm()/m.norm()):.2f}  cos {float(a@m/(a.norm()*m.norm())):.2f}")
