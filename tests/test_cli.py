import json
import subprocess
import sys

import numpy as np
from PIL import Image

from alexnet.cli import main


def test_models_lists_every_architecture(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "alexnet_paper" in out and "60,965,224" in out and "143,667,240" in out


def test_models_json_is_one_object(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert {r["name"]: r["params"] for r in rows}["vgg16"] == 138_357_544


def test_summary_seed_figures(capsys):
    assert main(["summary", "alexnet_bn", "--classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 46,793,482" in out and "Non-trainable params: 2,752" in out
    assert main(["summary", "alexnet_bn", "--classes", "10", "--in-channels", "1"]) == 0
    assert "Total params: 46,770,250" in capsys.readouterr().out


def test_summary_json(capsys):
    assert main(["summary", "alexnet", "--classes", "10", "--hidden", "4096,1024", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total_params"] == 44_428_106
    assert summary["input_shape"] == [3, 224, 224]
    assert summary["layers"][0]["output_shape"] == [64, 55, 55]


def test_impossible_image_size_is_a_one_line_error(capsys):
    assert main(["summary", "alexnet_paper", "--image-size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "alexnet: error: alexnet_paper cannot take a 64x64 input; the smallest that works is 67x67"


def test_unknown_model_exits_2(capsys):
    assert main(["summary", "resnet50"]) == 2
    assert "unknown model 'resnet50'" in capsys.readouterr().err


def test_bad_hidden_exits_2(capsys):
    assert main(["summary", "alexnet", "--hidden", "4096,x"]) == 2
    assert "--hidden" in capsys.readouterr().err


def test_bad_arguments_exit_2():
    assert main(["summary"]) == 2
    assert main(["summary", "alexnet", "--classes", "0"]) == 2
    assert main(["no-such-command"]) == 2


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "summary" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "alexnet", "summary", "alexnet_cifar", "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"] == "alexnet_cifar"


def test_cli_help_does_not_import_torch():
    code = "import sys; from alexnet.cli import main; main(['--help']); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip().endswith("False")


def test_data_reports_splits_and_stats(tmp_path, capsys):
    from fileformats import write_mnist

    write_mnist(tmp_path / "mnist")
    assert main(["data", "mnist", "--root", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["splits"]["train"]["images"] == 12 and report["splits"]["test"]["images"] == 5
    assert report["channels"] == 1 and report["image_size"] == [28, 28]
    assert str(tmp_path / "mnist") in report["source"] and len(report["mean"]) == 1
    assert main(["data", "mnist", "--root", str(tmp_path)]) == 0
    assert "total" in capsys.readouterr().out


def test_data_errors_exit_2(tmp_path, capsys):
    assert main(["data", "imagenet22k", "--root", str(tmp_path)]) == 2
    assert "unknown dataset 'imagenet22k'" in capsys.readouterr().err
    assert main(["data", f"folder:{tmp_path / 'missing'}", "--root", str(tmp_path)]) == 2
    assert "missing: no such folder" in capsys.readouterr().err


def test_commands_that_do_not_train_import_neither_torch_nor_lightning(tmp_path):
    # torch alone takes ~1.4 s to import on a 2-core machine; these commands must start well inside 1.5 s.
    from fileformats import write_mnist

    write_mnist(tmp_path / "mnist")
    for args in (["models"], ["summary", "alexnet"], ["recipes"], ["data", "mnist", "--root", str(tmp_path)]):
        code = (
            f"import sys; from alexnet.cli import main; code = main({args!r}); "
            "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning'}))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert done.stdout.strip().splitlines()[-1] == "0 []", args


def test_recipes_lists_the_default(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist (default)" in out and "cifar10-paper" in out


def test_evaluate_prints_one_json_object_and_exits_2_on_bad_input(tmp_path, capsys):
    from fileformats import write_mnist
    from modeldirs import write_model_dir

    write_mnist(tmp_path / "data" / "mnist", train=10, test=10)
    model_dir = write_model_dir(tmp_path / "run")
    assert main(["evaluate", str(model_dir), "--root", str(tmp_path / "data"), "--tta", "flip", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tta"] == "flip" and report["n"] == 10 and report["top1"] == 0.1
    assert main(["evaluate", str(model_dir), "--root", str(tmp_path / "data")]) == 0
    assert "most confused" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.strip() == f"alexnet: error: {tmp_path / 'nothing'}: no such file or directory"
    other = write_model_dir(tmp_path / "other")
    assert main(["evaluate", str(model_dir), str(other), "--root", str(tmp_path / "data"), "--json"]) == 0
    ensemble = json.loads(capsys.readouterr().out)
    assert ensemble["model"] == "ensemble of 2 (alexnet_cifar, alexnet_cifar)"
    assert [m["source"] for m in ensemble["members"]] == [str(model_dir), str(other)]


def test_test_views_that_training_never_showed_the_model_are_noted(tmp_path, capsys):
    from fileformats import write_mnist
    from modeldirs import write_model_dir

    write_mnist(tmp_path / "data" / "mnist", train=10, test=10)
    root = tmp_path / "data"
    still = write_model_dir(tmp_path / "still", augmented=("mirrors",))  # flips, no translations
    assert main(["evaluate", str(still), "--root", str(root), "--tta", "flip-translate", "--json"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"note: {still}: test views 'flip-translate' hold shifts, which training never showed this model and "
        "which usually cost accuracy; 'flip' matches its training"
    ]
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    assert main(["predict", str(still), str(image), "--tta", "ten-crop"]) == 0  # padding 2: ten crops shift
    assert "test views 'ten-crop' hold shifts" in capsys.readouterr().err
    for run, tta in ((still, "flip"), (write_model_dir(tmp_path / "unrecorded"), "flip-translate")):
        assert main(["evaluate", str(run), "--root", str(root), "--tta", tta, "--json"]) == 0
        assert capsys.readouterr().err == ""


def test_evaluate_and_predict_are_api_functions():
    import alexnet

    assert callable(alexnet.evaluate) and callable(alexnet.predict)
    assert alexnet.evaluate.__module__ == "alexnet.evaluation"


def test_every_training_setting_is_a_flag_with_its_help(capsys, monkeypatch):
    from dataclasses import fields

    from alexnet.training.config import TrainConfig, settings

    monkeypatch.setenv("COLUMNS", "300")  # long flag names stay whole
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # rich wraps long help over several lines
    for field in fields(TrainConfig):
        if field.name != "recipe":  # --recipe is the command's own option
            assert f"--{field.name.replace('_', '-')}" in text, field.name
    helps = {s.name: s.help for s in settings()}
    assert helps["whiten_eps"].startswith("with whiten: added to each eigenvalue")
    assert all(helps[name] for name in helps), [n for n, h in helps.items() if not h]


def test_derived_flags_reach_the_config(tmp_path, monkeypatch):
    import alexnet.training.run as run

    seen = {}

    def fake_train(config, *, out=None, resume=None):
        seen["config"] = config
        return None  # as a non-zero rank does: nothing to report

    monkeypatch.setattr(run, "train", fake_train)
    flags = [
        "--deterministic",
        "--no-flip",
        "--whiten-eps",
        "0.1",
        "--hidden",
        "64,32",
        "--model-options",
        "{towers: 1}",
    ]
    assert main(["train", "--model", "alexnet_paper", *flags]) == 0
    config = seen["config"]
    assert config.deterministic and not config.flip and config.whiten_eps == 0.1 and config.hidden == (64, 32)
    assert config.model_options == {"towers": 1}


def test_bad_values_of_derived_flags_exit_2(capsys):
    assert main(["train", "--schedule", "sometimes"]) == 2
    assert "schedule must be one of onecycle" in capsys.readouterr().err
    assert main(["train", "--epochs", "0"]) == 2
    assert "epochs must be at least 1" in capsys.readouterr().err


def test_a_model_option_value_the_builder_refuses_exits_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--model", "alexnet_cifar_fast", "--epochs", "1", "--out", str(out)]
    assert main(["train", *flags, "--model-options", "{widths: []}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "alexnet: error: model 'alexnet_cifar_fast': widths needs one width per block, at least one"
    assert main(["train", *flags, "--model-options", "{block_convs: 0}"]) == 2
    assert capsys.readouterr().err.strip().endswith("block_convs must be a whole number, at least 1, not 0")
    assert not out.exists()


def test_log_lines_follow_stderr_when_it_is_redirected_after_the_first_command(capsys):
    import contextlib
    import io
    import logging

    assert main(["models"]) == 0  # the first command sets the handler up
    capsys.readouterr()
    redirected = io.StringIO()
    with contextlib.redirect_stderr(redirected):
        logging.getLogger("alexnet.train").info("a progress line")
    assert redirected.getvalue() == "a progress line\n"
