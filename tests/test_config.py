"""Tests of the training configuration: YAML round trip, overrides, validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pvdetect.config import (
    TrainConfig,
    config_from_dict,
    dump_config,
    load_config,
    merge,
    read_yaml,
    save_config,
)
from pvdetect.errors import ConfigError


def test_yaml_round_trip_keeps_every_value(tmp_path: Path) -> None:
    cfg = config_from_dict(
        {
            "data": {"root": "/d", "batch_size": 7, "drop_empty": 0.25, "band_order": [2, 1, 0, 3]},
            "model": {"arch": "unetplusplus", "encoder": "resnet34", "weights": None},
            "loss": {"name": "dice", "params": {"eps": 2.0}},
            "optim": {"optimizer": "adam", "lr": 0.0005},
            "upscale": {"factor": 2},
            "epochs": 3,
            "devices": [0, 1],
        }
    )
    path = save_config(cfg, tmp_path / "cfg.yaml")
    back = load_config(path)
    assert back == cfg
    assert back.data.band_order == [2, 1, 0, 3]
    assert back.loss.params == {"eps": 2.0}
    assert back.devices == [0, 1]
    # the file is plain nested YAML with the sections
    raw = yaml.safe_load(path.read_text())
    assert raw["data"]["batch_size"] == 7 and raw["optim"]["optimizer"] == "adam"


def test_defaults() -> None:
    cfg = config_from_dict({})
    assert cfg == TrainConfig()
    assert (cfg.data.batch_size, cfg.data.val_batch_size, cfg.data.test_batch_size) == (5, 5, 40)
    assert cfg.precision == "auto" and cfg.optim.plateau_factor == 0.5
    assert cfg.optim.plateau_patience == 5 and cfg.patience == 20 and cfg.min_delta == 1e-4


def test_overrides_win_over_yaml_and_yaml_over_defaults(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  batch_size: 8\n  num_workers: 1\noptim:\n  lr: 1e-3\nepochs: 4\n")
    cfg = load_config(p, {"data.batch_size": 3, "upscale.factor": "4", "model.weights": "none"})
    assert cfg.data.batch_size == 3  # CLI over YAML
    assert cfg.data.num_workers == 1  # YAML over default
    assert cfg.optim.lr == pytest.approx(1e-3)  # YAML 1.1 reads "1e-3" as a string
    assert cfg.epochs == 4 and cfg.upscale.factor == 4
    assert cfg.model.weights is None
    assert cfg.data.test_batch_size == 40  # default


def test_merge_does_not_modify_base() -> None:
    base = {"data": {"batch_size": 2}}
    out = merge(base, {"data.num_workers": 0, "seed": 3})
    assert out == {"data": {"batch_size": 2, "num_workers": 0}, "seed": 3}
    assert base == {"data": {"batch_size": 2}}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"data": {"bach_size": 2}}, "data.bach_size (did you mean data.batch_size?)"),
        ({"epoch": 2}, "unknown option epoch"),
        ({"data": {"batch_size": "many"}}, "data.batch_size: expected an integer"),
        ({"data": {"batch_size": 0}}, "data.batch_size: must be >= 1"),
        ({"data": {"drop_empty": 1.5}}, "data.drop_empty"),
        ({"optim": {"optimizer": "sgd"}}, "optim.optimizer"),
        ({"upscale": {"factor": 3}}, "upscale.factor"),
        ({"upscale": {"factor": 2, "method": "sr"}}, "upscale.sr_weights"),
        ({"data": {"crop_size": 33}, "upscale": {"factor": 2}}, "data.crop_size"),
        ({"precision": "64"}, "precision"),
        ({"compile": "maybe"}, "compile: expected true or false"),
        ({"model": "unet"}, "model: expected a mapping"),
    ],
)
def test_bad_values_name_the_key(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("data:\n  batch_sise: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown option data\.batch_sise"):
        load_config(p)
    p.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML"):
        read_yaml(p)
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")


def test_devices_forms() -> None:
    assert config_from_dict({"devices": "2"}).devices == 2
    assert config_from_dict({"devices": "0,1"}).devices == [0, 1]
    assert config_from_dict({"devices": "auto"}).devices == "auto"
    assert "devices:" in dump_config(config_from_dict({"devices": 2}))
