import pytest
import torch
import torch.nn.functional as F

from alexnet.errors import InputError
from alexnet.inference import load_classifier
from alexnet.modelcard import InputSpec
from alexnet.training.distill import distillation_loss, load_teacher

from modeldirs import MNIST_CLASSES, biased_model, write_model_dir

INPUTS = InputSpec(image_size=28, channels=1, mean=(0.1,), std=(0.3,), storage_size=28)  # the student's
CLASSES = tuple(MNIST_CLASSES)


def test_the_loss_is_t_squared_times_the_kl_divergence_and_zero_on_agreement():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 10, generator=generator), torch.randn(4, 10, generator=generator)
    for t in (1.0, 3.0):
        p = F.softmax(teacher / t, -1)
        expected = (p * (p.log() - F.log_softmax(student / t, -1))).sum(-1).mean() * t * t
        got = distillation_loss(student, F.log_softmax(teacher / t, -1), t)
        torch.testing.assert_close(got, expected)
        assert distillation_loss(teacher, F.log_softmax(teacher / t, -1), t).abs() < 1e-6


def test_the_loss_pulls_the_model_towards_the_teacher():
    logits = torch.zeros(1, 10, requires_grad=True)
    taught = F.log_softmax(torch.arange(10.0)[None], -1)
    distillation_loss(logits, taught, 1.0).backward()
    assert logits.grad[0, 9] < 0 < logits.grad[0, 0]  # gradient descent raises the teacher's favourite


def _reading_model(seed: int) -> torch.nn.Module:
    """A small model whose logits depend on its input (the last layer reads the features)."""
    model, _ = biased_model(7, 2)
    with torch.no_grad():
        model.classifier[-1].weight.copy_(torch.randn(10, 8, generator=torch.Generator().manual_seed(seed)) * 3)
    return model


def test_an_ensemble_teacher_gives_its_members_mean_probabilities_on_the_models_inputs(tmp_path):
    run = tmp_path / "pair"  # an ensemble run directory, as `alexnet train --members 2` lays it out
    members = [write_model_dir(run / f"member-{k}", _reading_model(k)) for k in (0, 1)]  # mean 0.5, std 0.25
    teacher = load_teacher(str(run), INPUTS, CLASSES)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    pixels = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    ours = (pixels - 0.1) / 0.3  # the student's normalisation
    models = [load_classifier(m, precision="fp32").model for m in members]
    for t in (1.0, 2.0):
        expected = torch.stack([F.softmax(m((pixels - 0.5) / 0.25) / t, -1) for m in models]).mean(0).log()
        torch.testing.assert_close(teacher(ours, t), expected, atol=1e-5, rtol=1e-5)
    # the check can fail: the members disagree, and the student's normalisation fed as is gives other outputs
    assert not torch.allclose(models[0](ours), models[1](ours), atol=0.1)
    assert not torch.allclose(teacher(ours), torch.stack([F.softmax(m(ours), -1) for m in models]).mean(0).log())


@pytest.mark.parametrize(
    ("inputs", "classes", "message"),
    [
        (INPUTS, ("cat", "dog"), r"a teacher of 10 classes \(0, 1, 2, 3 \.\.\.\), not the data's 2 \(cat, dog\)$"),
        (InputSpec(32, 1, (0.1,), (0.3,), 32), CLASSES, "a teacher of 28-px, 1-channel input, not the model's 32 px"),
    ],
)
def test_a_teacher_of_other_classes_or_inputs_is_a_one_line_error(tmp_path, inputs, classes, message):
    folder = write_model_dir(tmp_path / "teacher")
    with pytest.raises(InputError, match=rf"^{folder}: {message}"):
        load_teacher(str(folder), inputs, classes)


def test_a_missing_teacher_is_a_one_line_error(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        load_teacher(str(tmp_path / "nowhere"), INPUTS, CLASSES)
