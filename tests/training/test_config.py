import pytest
import yaml

from alexnet.errors import InputError
from alexnet.training.config import DEFAULT_RECIPE, TrainConfig, read_recipe, recipe_names, resolve_config


def test_default_is_the_fashion_mnist_recipe():
    config = resolve_config()
    assert config.recipe == DEFAULT_RECIPE == "fashion-mnist"
    assert config.data == "fashion-mnist" and config.model == "alexnet_cifar_fast"


def test_precedence_defaults_recipe_file_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nlr: 0.2\n")
    config = resolve_config(recipe="fashion-mnist", config_file=path, overrides={"lr": 0.05, "seed": None})
    assert config.epochs == 3 and config.lr == 0.05 and config.seed == 0
    assert config.model_options == read_recipe("fashion-mnist")[0]["model_options"] and config.whiten  # the recipe's


def test_set_null_clears_a_recipes_value_where_a_missing_flag_does_not():
    kept = resolve_config(recipe="cifar10-transfer", overrides={"pretrained": None})
    assert kept.pretrained == "imagenet"  # a flag not given
    cleared = resolve_config(recipe="cifar10-transfer", settings={"pretrained": None, "head_epochs": 0})
    assert cleared.pretrained is None and cleared.head_epochs == 0  # --set pretrained=null
    assert resolve_config(overrides={"lr": 0.5}, settings={"lr": 0.25}).lr == 0.25  # --set is applied last


def test_run_config_round_trips(tmp_path):
    import yaml

    config = resolve_config(overrides={"hidden": "64,32", "epochs": 2})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert resolve_config(config_file=path) == config


def test_unknown_setting_and_bad_values_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="unknown setting 'epoch'"):
        TrainConfig().replace(epoch=3)
    with pytest.raises(InputError, match="epochs must be a number"):
        TrainConfig().replace(epochs="many")
    with pytest.raises(InputError, match="flip must be true or false"):
        TrainConfig().replace(flip="yes")
    with pytest.raises(InputError, match="hidden must be widths"):
        TrainConfig().replace(hidden="4096,x")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(InputError, match="bad.yaml: expected a mapping"):
        resolve_config(config_file=bad)


def test_every_recipe_reads_and_resolves():
    names = recipe_names()
    assert DEFAULT_RECIPE in names
    for name in names:
        settings, description = read_recipe(name)
        assert description, f"{name} has no description"
        resolve_config(recipe=name)


def test_unknown_recipe():
    with pytest.raises(InputError, match="unknown recipe 'imagenet'; recipes: .*fashion-mnist"):
        resolve_config(recipe="imagenet")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr": -1}, "lr must be at least 0, not -1"),
        ({"seed": -1}, "seed must be between 0 and 4,294,967,295, not -1"),
        ({"split_seed": -2}, "split_seed must be between 0 and 4,294,967,295, not -2"),
        ({"image_size": 100_000}, "image_size must be between 1 and 4,096, not 100000"),
        ({"epochs": -3}, "epochs must be at least 1, not -3"),
        ({"epochs": 1.5}, "epochs must be a whole number, not 1.5"),
        ({"epochs": None}, "epochs must be a number, not None"),
        ({"model": {"a": 1}}, "model must be text"),
        ({"hidden": [0, -5]}, "hidden widths must be positive"),
        ({"sam_rho": -0.05}, "sam_rho must be at least 0, not -0.05"),
    ],
)
def test_every_source_of_settings_is_checked_in_one_place(tmp_path, settings, message):
    with pytest.raises(InputError, match=message):
        TrainConfig().replace(**settings)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    with pytest.raises(InputError, match=message):
        resolve_config(config_file=path)


def test_config_files_that_are_not_utf8_or_have_odd_keys(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes("epochs: 3 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin1.yaml: not UTF-8 text"):
        resolve_config(config_file=tmp_path / "latin1.yaml")
    (tmp_path / "keys.yaml").write_text("1: 2\n")
    with pytest.raises(InputError, match="keys.yaml: setting names must be text"):
        resolve_config(config_file=tmp_path / "keys.yaml")


def test_a_recipe_with_a_base_holds_only_what_differs(tmp_path, monkeypatch):
    small, base = read_recipe("cifar10-small")[0], read_recipe("cifar10")[0]
    assert small["epochs"] == 80 and small["lookahead"] == base["lookahead"] == 0.95 and "base" not in small
    assert {k: v for k, v in small.items() if base.get(k) != v} == _own_lines("cifar10-small")
    # A loop of bases is one line naming it, not a RecursionError.
    from importlib import resources

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "a.yaml").write_text("base: b\nepochs: 2\n")
    (tmp_path / "recipes" / "b.yaml").write_text("base: a\n")
    monkeypatch.setattr(resources, "files", lambda package: tmp_path)
    with pytest.raises(InputError, match=r"recipe 'a': its bases form a loop \(a -> b -> a\)"):
        read_recipe("a")


def _own_lines(name: str) -> dict:
    from importlib import resources

    document = yaml.safe_load((resources.files("alexnet") / "recipes" / f"{name}.yaml").read_text())
    return {k: v for k, v in document.items() if k not in ("description", "base")}


def test_the_splits_follow_the_seed_unless_split_seed_is_set():
    assert TrainConfig(seed=3).data_seed == 3 and TrainConfig(seed=3, split_seed=0).data_seed == 0
