"""ResNet18, FastText and LoanMLP: parameter counts by hand, output shapes, a training step, optimisers."""
from __future__ import annotations

import warnings

import pytest
import torch

from fl_lightning.models import ClassifierModule, FastText, LoanMLP, PaperCNN, ResNet18
from fl_lightning.models.base import count_parameters


def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k  # bias-free


def bn(c: int) -> int:
    return 2 * c  # weight and bias


def linear(cin: int, cout: int) -> int:
    return cin * cout + cout


def basic_block(cin: int, cout: int) -> int:
    projection = conv(cin, cout, 1) + bn(cout) if cin != cout else 0
    return conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout) + projection


def resnet18_params(num_classes: int) -> int:
    stem = conv(3, 64, 3) + bn(64)
    stages = sum(basic_block(cin, cout) + basic_block(cout, cout)
                 for cin, cout in ((64, 64), (64, 128), (128, 256), (256, 512)))
    return stem + stages + linear(512, num_classes)


def step(model: ClassifierModule, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        return model.training_step(batch, 0)


def test_parameter_counts() -> None:
    assert resnet18_params(10) == 11_173_962
    assert count_parameters(ResNet18()) == resnet18_params(10)
    assert count_parameters(ResNet18(num_classes=100)) == resnet18_params(100)
    assert count_parameters(FastText()) == 25_000 * 100 + linear(100, 1)
    assert count_parameters(FastText(vocab_size=50, embed_dim=8)) == 50 * 8 + linear(8, 1)
    assert count_parameters(LoanMLP()) == linear(91, 46) + linear(46, 23) + linear(23, 9) == 5_529


def test_resnet18_forward_and_step() -> None:
    torch.manual_seed(0)
    model = ResNet18()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 9])
    assert model(x).shape == (4, 10)
    loss = step(model, (x, y))
    assert loss.dim() == 0 and loss.requires_grad
    loss.backward()
    assert model.stem[0].weight.grad is not None
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    optimiser = model.configure_optimizers()
    assert isinstance(optimiser, torch.optim.SGD) and optimiser.defaults["lr"] == 0.01


def test_fasttext_ignores_padding() -> None:
    torch.manual_seed(0)
    model = FastText(vocab_size=30, embed_dim=4)
    tokens = torch.tensor([[5, 7, 0, 0], [5, 7, 9, 0], [0, 0, 0, 0]])
    logits = model(tokens)
    assert logits.shape == (3, 1)
    assert torch.allclose(logits[0], model(torch.tensor([[5, 7]]))[0])  # padding left out of the mean
    assert torch.allclose(logits[2], model.fc.bias)  # all padding: empty bag
    loss = step(model, (tokens, torch.tensor([1, 0, 1])))
    assert loss.dim() == 0 and loss.requires_grad
    loss.backward()
    assert model.embedding.weight.grad[0].abs().sum() == 0  # padding row never learns
    assert model.predict(logits).tolist() == (logits.reshape(-1) > 0).long().tolist()
    optimiser = model.configure_optimizers()
    assert isinstance(optimiser, torch.optim.Adam) and optimiser.defaults["lr"] == 0.05


def test_loan_mlp_forward_and_step() -> None:
    model = LoanMLP()
    x, y = torch.randn(8, 91), torch.arange(8) % 9
    assert model(x).shape == (8, 9)
    loss = step(model, (x, y))
    assert loss.dim() == 0 and loss.requires_grad
    optimiser = model.configure_optimizers()
    assert isinstance(optimiser, torch.optim.SGD) and optimiser.defaults["lr"] == 0.01


@pytest.mark.parametrize("cls,kwargs", [(ResNet18, {"num_classes": 7, "lr": 0.1}),
                                        (FastText, {"vocab_size": 99, "lr": 0.5}),
                                        (LoanMLP, {"in_features": 12, "lr": 0.002}),
                                        (PaperCNN, {"lr": 0.03})])
def test_hyperparameters_saved(cls: type, kwargs: dict) -> None:
    model = cls(**kwargs)
    assert all(model.hparams[k] == v for k, v in kwargs.items())
    assert type(cls(**dict(model.hparams))) is cls
