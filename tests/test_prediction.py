import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli import main
from alexnet.inference import load_classifier
from alexnet.prediction import collect_images, predict

from modeldirs import BIAS, MNIST_CLASSES, biased_model, write_model_dir

RANKING = [MNIST_CLASSES[i] for i in torch.argsort(BIAS, descending=True).tolist()]


def _photos(folder):
    """One image in each format and mode predict must take, a nested folder, a corrupt file and a text file."""
    rng = np.random.default_rng(0)
    (folder / "nested" / "deeper").mkdir(parents=True)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    rgb.save(folder / "photo1.jpg")
    rgb.convert("CMYK").save(folder / "photo2_cmyk.jpg")
    rgb.convert("L").save(folder / "photo3_grey.png")
    Image.fromarray(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8), "RGBA").save(folder / "photo4_alpha.png")
    rgb.save(folder / "nested" / "photo5.bmp")
    rgb.save(folder / "nested" / "deeper" / "photo10.webp")
    (folder / "nested" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "LICENSE.txt").write_text("not an image")


def test_every_format_is_read_and_ranked_the_model_way(tmp_path):
    _photos(tmp_path / "photos")
    model_dir = write_model_dir(tmp_path / "model")
    results = predict(model_dir, [tmp_path / "photos"], top_k=3, precision="fp32")
    names = [r["path"].rsplit("/", 1)[-1] for r in results]
    # Natural order of the path under the folder named: nested/ sorts before photo1.jpg.
    assert names == ["broken.png", "photo10.webp", "photo5.bmp", "photo1.jpg", "photo2_cmyk.jpg", "photo3_grey.png",
                     "photo4_alpha.png"]  # fmt: skip
    broken = results[0]
    assert "cannot read image" in broken["error"] and "top" not in broken
    probabilities = BIAS.softmax(0)
    for r in results[1:]:
        assert [t["class"] for t in r["top"]] == RANKING[:3]
        assert r["top"][0]["probability"] == pytest.approx(probabilities.max().item(), abs=1e-6)


def test_a_stored_dataset_image_saved_as_png_predicts_as_it_evaluates(tmp_path):
    torch.manual_seed(1)
    from alexnet.models import get_model

    from modeldirs import KWARGS

    model_dir = write_model_dir(tmp_path / "model", get_model("alexnet_cifar", **KWARGS).eval())
    pixels = np.random.default_rng(2).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "digit.png")
    [result] = predict(model_dir, [tmp_path / "digit.png"], top_k=10, precision="fp32")
    direct = load_classifier(model_dir, precision="fp32").probabilities(torch.from_numpy(pixels)[None, None])[0]
    got = torch.zeros(10)
    for t in result["top"]:
        got[MNIST_CLASSES.index(t["class"])] = t["probability"]
    torch.testing.assert_close(got, direct, atol=1e-4, rtol=0)


def test_cli_table_json_lines_csv_and_exit_status(tmp_path, capsys):
    _photos(tmp_path / "photos")
    model_dir = write_model_dir(tmp_path / "model")
    out_csv = tmp_path / "out.csv"
    code = main(["predict", str(model_dir), str(tmp_path / "photos"), "--json", "--top-k", "2", "--out", str(out_csv)])
    captured = capsys.readouterr()
    assert code == 2  # one unreadable image
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert len(lines) == 7 and sum("error" in line for line in lines) == 1
    assert all(len(line["top"]) == 2 for line in lines if "error" not in line)
    [error_line] = captured.err.strip().splitlines()
    assert error_line.startswith("alexnet: error: ") and "broken.png: cannot read image" in error_line
    rows = list(csv.reader(out_csv.open()))
    assert rows[0] == ["path", "class_1", "probability_1", "class_2", "probability_2", "error"]
    assert len(rows) == 8 and rows[2][1] == RANKING[0]
    assert float(rows[2][2]) == pytest.approx(BIAS.softmax(0).max().item(), abs=1e-3)  # auto precision: bf16 here
    assert rows[1][-1].startswith("cannot read image") and rows[1][1] == ""

    good = str(tmp_path / "photos" / "photo1.jpg")
    assert main(["predict", str(model_dir), good]) == 0
    table = capsys.readouterr().out.strip()
    assert table.startswith(good) and f"{RANKING[0]} " in table


def test_an_ensemble_predicts_its_members_average(tmp_path, capsys):
    # Alone, one model predicts 7 and the other 0; both give 2 their second-best score, which wins the average.
    (a, logits_a), (b, logits_b) = biased_model(7, 2), biased_model(0, 2)
    first, second = write_model_dir(tmp_path / "a", a), write_model_dir(tmp_path / "b", b)
    Image.new("L", (28, 28), 90).save(tmp_path / "digit.png")
    average = (logits_a.softmax(0) + logits_b.softmax(0)) / 2
    [result] = predict([first, second], [tmp_path / "digit.png"], top_k=3, precision="fp32")
    shown = {t["class"]: t["probability"] for t in result["top"]}  # 7 and 0 tie in the average
    assert result["top"][0]["class"] == "2" and shown == pytest.approx(
        {c: average[int(c)].item() for c in "270"}, abs=1e-6
    )
    assert predict(first, [tmp_path / "digit.png"], top_k=1, precision="fp32")[0]["top"][0]["class"] == "7"
    args = ["predict", str(first), str(tmp_path / "digit.png"), "--json", "--top-k", "3", "--precision", "fp32"]
    assert main([*args, "--ensemble", str(second)]) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    assert top[0]["class"] == "2" and {t["class"]: t["probability"] for t in top} == shown


def test_an_ensemble_of_other_classes_or_sizes_is_refused_in_one_line(tmp_path, capsys):
    from dataclasses import replace

    from alexnet.modelcard import ModelCard

    first, renamed, larger = (write_model_dir(tmp_path / name) for name in ("a", "b", "c"))
    card = ModelCard.read(renamed)
    replace(card, classes=(*card.classes[:9], "nine")).write(renamed)
    card = ModelCard.read(larger)
    replace(card, preprocess=replace(card.preprocess, storage_size=32)).write(larger)
    Image.new("L", (28, 28), 90).save(tmp_path / "digit.png")
    for member, message in ((renamed, "its 10 classes (0, 1, 2, 3 ...) are not"), (larger, "decoded at 32 px, not")):
        assert main(["predict", str(first), str(tmp_path / "digit.png"), "--ensemble", str(member)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith(f"alexnet: error: {member}: ")
        assert message in captured.err and len(captured.err.strip().splitlines()) == 1


def test_missing_paths_are_errors_and_the_rest_still_run(tmp_path):
    _photos(tmp_path / "photos")
    entries = collect_images([tmp_path / "nope.jpg", tmp_path / "photos" / "photo1.jpg", tmp_path / "empty"])
    assert entries[0] == (tmp_path / "nope.jpg", "no such file or directory")
    assert entries[1] == (tmp_path / "photos" / "photo1.jpg", None)
    (tmp_path / "empty").mkdir()
    assert "no images" in collect_images([tmp_path / "empty"])[0][1]


def test_predict_from_a_shipped_model_directory_in_a_fresh_process(tmp_path):
    model_dir = write_model_dir(tmp_path / "shipped")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "red.png")
    done = subprocess.run(
        [sys.executable, "-m", "alexnet", "predict", str(model_dir), str(tmp_path / "red.png"), "--json"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["path"].endswith("red.png") and result["top"][0]["class"] == RANKING[0]
