import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.models import get_model
from alexnet.training.config import TrainConfig
from alexnet.training.optim import (
    SharpnessAware,
    StepSchedule,
    build_optimizer,
    build_scheduler,
    kept_norm_statistics,
    parameter_groups,
    start_momentum,
)
from alexnet.training.task import ClassificationTask


def test_norms_and_biases_are_spared_from_weight_decay():
    model = get_model("alexnet_cifar", widths=(8, 8, 8, 8, 8), hidden=(16,))
    decayed, spared = parameter_groups(model, 5e-4, decay_norms_and_biases=False, lr=0.1)
    assert decayed["weight_decay"] == 5e-4 and spared["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in spared["params"])
    assert len(parameter_groups(model, 5e-4, decay_norms_and_biases=True, lr=0.1)) == 1


def test_pretrained_parameters_get_a_scaled_rate_and_excluded_ones_no_group():
    model = get_model("alexnet_cifar", widths=(8, 8, 8, 8, 8), hidden=(16,))
    names = [n for n, _ in model.named_parameters()]
    backbone = {n for n in names if n.startswith("features.")}
    groups = parameter_groups(
        model, 5e-4, decay_norms_and_biases=True, lr=0.1, scaled=backbone, scale=0.1, exclude={"features.0.weight"}
    )
    by_rate = {round(g["lr"], 6): sum(p.numel() for p in g["params"]) for g in groups}
    params = dict(model.named_parameters())
    assert by_rate[0.01] == sum(params[n].numel() for n in backbone - {"features.0.weight"})
    assert by_rate[0.1] == sum(params[n].numel() for n in names if n not in backbone)


def test_optimizers():
    model = torch.nn.Linear(3, 2)
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd", nesterov=True, momentum=0.9, lr=0.1))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert isinstance(build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3)), torch.optim.AdamW)


def test_onecycle_warms_up_peaks_and_anneals():
    schedule = StepSchedule("onecycle", total_steps=100, warmup_steps=10)
    assert schedule(0) == pytest.approx(1 / 25)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(55) == pytest.approx(0.5, abs=0.01)
    assert schedule(100) == pytest.approx(1e-4)
    values = [schedule(t) for t in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_step_and_constant():
    step = StepSchedule("step", total_steps=100, warmup_steps=0, step_size=30, gamma=0.1)
    assert [step(t) for t in (0, 29, 30, 60)] == pytest.approx([1, 1, 0.1, 0.01])
    assert StepSchedule("constant", total_steps=10, warmup_steps=2)(5) == 1.0


def test_plateau_is_the_papers_divide_by_ten_on_val_acc():
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.01)
    entry = build_scheduler(optimizer, TrainConfig(schedule="plateau", plateau_patience=1), steps_per_epoch=5)
    assert entry["monitor"] == "val_acc" and entry["interval"] == "epoch"
    for acc in (0.5, 0.5, 0.5):
        entry["scheduler"].step(acc)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)


def test_warmup_never_takes_a_whole_short_run():
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    entry = build_scheduler(optimizer, TrainConfig(epochs=1, warmup_epochs=1.0), steps_per_epoch=10)
    assert entry["scheduler"].lr_lambdas[0].warmup_steps == 3


def test_linear_schedule_is_a_triangle_from_start_to_final():
    schedule = StepSchedule("linear", total_steps=100, warmup_steps=20, start=0.2, final=0.07)
    assert schedule(0) == pytest.approx(0.2)
    assert schedule(10) == pytest.approx(0.6)
    assert schedule(20) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(1 + (0.07 - 1) * 0.5)
    assert schedule(100) == pytest.approx(0.07)
    steps = [schedule(t) for t in range(20, 101)]
    assert all(b - a == pytest.approx(steps[1] - steps[0]) for a, b in zip(steps, steps[1:], strict=False))
    config = TrainConfig(schedule="linear", warmup_epochs=2, warmup_start=0.2, final_lr=0.07, epochs=10)
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    built = build_scheduler(optimizer, config, steps_per_epoch=10)["scheduler"].lr_lambdas[0]
    assert (built.kind, built.warmup_steps, built.start, built.final) == ("linear", 20, 0.2, 0.07)


def test_bias_lr_scale_speeds_up_biases_and_keeps_their_decay_per_step():
    model = get_model("alexnet_cifar", widths=(8, 8, 8, 8, 8), hidden=(16,))
    groups = parameter_groups(model, 0.002, decay_norms_and_biases=True, lr=0.5, bias_scale=64)
    weights, biases = sorted(groups, key=lambda g: g["lr"])
    assert weights["lr"] == 0.5 and biases["lr"] == 32.0
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim == 1 for p in biases["params"])
    assert biases["lr"] * biases["weight_decay"] == pytest.approx(weights["lr"] * weights["weight_decay"])


def test_a_zero_momentum_buffer_takes_the_same_first_step_as_torchs_own():
    grad = torch.tensor([0.5, -1.0, 2.0])
    steps = []
    for started in (False, True):
        weight = torch.nn.Parameter(torch.ones(3))
        optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
        if started:
            start_momentum(optimizer)
            assert torch.equal(optimizer.state[weight]["momentum_buffer"], torch.zeros(3))
        for _ in range(2):
            weight.grad = grad.clone()
            optimizer.step()
        steps.append(weight.detach().clone())
    assert torch.allclose(steps[0], steps[1], atol=0, rtol=1e-6)


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_sam_moves_the_weights_rho_uphill_and_restores_them_exactly():
    model = _small_net()
    before = [p.detach().clone() for p in model.parameters()]
    F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
    model[1].weight.grad = None  # a parameter without a gradient (frozen) stays where it is
    sam = SharpnessAware(rho=0.5)
    sam.ascend(model)
    moves = [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]
    assert torch.equal(moves[2], torch.zeros_like(moves[2]))
    assert torch.linalg.vector_norm(torch.cat([m.flatten() for m in moves])).item() == pytest.approx(0.5, rel=1e-5)
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    scale = 0.5 / torch.linalg.vector_norm(torch.cat([g.flatten() for g in gradients]))
    for move, parameter in zip(moves, model.parameters(), strict=True):
        if parameter.grad is not None:  # along the gradient
            torch.testing.assert_close(move, parameter.grad * scale)
    sam.restore()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    with pytest.raises(ValueError, match="rho must be positive"):
        SharpnessAware(0.0)


def test_kept_norm_statistics_normalise_by_the_batch_and_leave_the_running_ones():
    model = _small_net()
    x = torch.randn(8, 4)
    running = {k: v.clone() for k, v in model[1].named_buffers()}
    with kept_norm_statistics(model):
        inside = model(x)
    assert all(torch.equal(v, running[k]) for k, v in model[1].named_buffers())
    assert torch.equal(inside, model(x))  # the same batch statistics were used
    assert not torch.equal(model[1].running_mean, running["running_mean"])  # outside, they update


def _one_step(model, x, y, teacher=None, **settings) -> pl.Trainer:
    config = TrainConfig(lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant", warmup_epochs=0, **settings)
    task = ClassificationTask(model, config, classes=("a", "b", "c"), steps_per_epoch=1, teacher=teacher)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", precision="32-true", logger=False, enable_checkpointing=False,
        limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(task, torch.utils.data.DataLoader(list(zip(x, y, strict=True)), batch_size=len(x)))
    return trainer


def test_a_sam_step_descends_with_the_gradient_at_the_moved_weights():
    """w <- w - lr * grad L(w + rho g / ||g||), g = grad L(w); BatchNorm's running statistics and the logged
    training loss come from the pass at w alone, as in a step without SAM."""
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    reference = _small_net()
    weights = [p.detach().clone() for p in reference.parameters()]
    first = torch.autograd.grad(F.cross_entropy(reference(x), y), list(reference.parameters()))
    norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in first]))
    with torch.no_grad():
        for parameter, gradient in zip(reference.parameters(), first, strict=True):
            parameter.add_(0.05 * gradient / norm)
    second = torch.autograd.grad(F.cross_entropy(reference(x), y), list(reference.parameters()))

    model = _small_net()
    sam = _one_step(model, x, y, sam_rho=0.05)
    for parameter, weight, gradient in zip(model.parameters(), weights, second, strict=True):
        torch.testing.assert_close(parameter.detach(), weight - 0.1 * gradient)
    plain_model = _small_net()
    plain = _one_step(plain_model, x, y)
    assert not torch.allclose(plain_model[0].weight, model[0].weight)
    assert torch.equal(plain_model[1].running_mean, model[1].running_mean)
    assert torch.equal(plain_model[1].num_batches_tracked, model[1].num_batches_tracked)
    assert sam.callback_metrics["train_loss"].item() == pytest.approx(plain.callback_metrics["train_loss"].item())
    late_model = _small_net()
    _one_step(late_model, x, y, sam_rho=0.05, sam_start_epoch=1)  # late SAM: the first epoch steps plainly
    late, plain_state = late_model.state_dict(), plain_model.state_dict()
    assert all(torch.equal(late[key], plain_state[key]) for key in plain_state)


class _CountingTeacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: torch.Tensor, temperature: float) -> torch.Tensor:
        self.calls += 1
        return F.log_softmax(images[:, :3] / temperature, -1)


def test_sams_second_pass_reuses_the_teachers_answer_for_the_batch():
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    teacher = _CountingTeacher()
    _one_step(_small_net(), x, y, teacher=teacher, sam_rho=0.05, distill="teacher")
    assert teacher.calls == 1
