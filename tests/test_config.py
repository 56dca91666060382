"""Tests of the training configuration: YAML round trip, overrides, validation errors."""

from __future__ import annotations

import re
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


# --------------------------------------------------------------------------- pydantic models


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lr": 1e-3}, "unknown option lr (did you mean optim.lr?)"),
        ({"batch_size": 4}, "unknown option batch_size (did you mean data.batch_size?)"),
        ({"data": {"lr": 0.1}}, "unknown option data.lr (did you mean optim.lr?)"),
        (
            {"optim": {"schedul": "cosine"}},
            "unknown option optim.schedul (did you mean optim.schedule?)",
        ),
        ({"data": 5}, "data: expected a mapping of options, got 5"),
        ({"optim": {"lr": -1.0}}, "optim.lr: must be > 0, got -1.0"),
        ({"optim": {"lr": "fast"}}, "optim.lr: expected a number, got 'fast'"),
        ({"optim": {"lr": float("nan")}}, "optim.lr: expected a finite number, got nan"),
        ({"optim": {"schedule": "step"}}, "optim.schedule: must be plateau or cosine, got 'step'"),
        ({"upscale": {"factor": 3}}, "upscale.factor: must be 1, 2 or 4, got 3"),
        ({"data": {"drop_empty": 1.5}}, "data.drop_empty: must be in [0, 1], got 1.5"),
        ({"optim": {"warmup": 1.0}}, "optim.warmup: must be in [0, 1), got 1.0"),
        ({"data": {"batch_size": True}}, "data.batch_size: expected an integer, got True"),
        ({"data": {"batch_size": 2.5}}, "data.batch_size: expected an integer, got 2.5"),
        ({"model": {"arch": " "}}, "model.arch: must not be empty, got ' '"),
        ({"data": {"band_order": [2, -1, 0, 3]}}, "data.band_order[1]: must be >= 0, got -1"),
        ({"devices": [0, -1]}, "devices: must list non-negative device ids, got [0, -1]"),
        ({"devices": 0}, "devices: must be >= 1, -1 (all), a list of ids or 'auto', got 0"),
        ({"loss": {"params": [1]}}, "loss.params: expected a mapping, got [1]"),
        (
            {"data": {"val_fraction": 0.6, "test_fraction": 0.5}},
            "data.val_fraction + data.test_fraction must be < 1, got 0.6 + 0.5",
        ),
        (
            {"data": {"crop_size": 33}, "upscale": {"factor": 2}},
            "data.crop_size: must be a multiple of upscale.factor 2, got 33",
        ),
        (
            {"data": {"root": "x", "synthetic": {"chips": 5, "off_last": 10}}, "epochs": 10},
            "data.synthetic.off_last: must be below epochs 10, got 10",
        ),
        (
            {"data": {"synthetic": {"chips": 5, "off_last": 2}}, "epochs": 10},
            "data.synthetic.off_last: needs a dataset and synthetic chips",
        ),
        (
            {"upscale": {"factor": 2, "method": "sr"}},
            "upscale.sr_weights: the 'sr' method needs a weights file (--sr-weights)",
        ),
    ],
)
def test_messages_are_one_line_and_name_key_and_value(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"optim": {"schedul": "cosine"}})
    assert str(err.value).endswith(
        "valid options here: optimizer, lr, schedule, warmup, weight_decay, plateau_factor, "
        "plateau_patience, min_lr, gradient_clip"
    )


def test_lenient_spellings_become_the_typed_values() -> None:
    cfg = config_from_dict(
        {
            "data": {"band_order": "2,1,0,3", "batch_size": "6", "augment": "no"},
            "model": {"weights": ""},
            "optim": {"optimizer": "AdamW", "schedule": "Cosine", "lr": "5e-4"},
            "upscale": {"factor": "2", "method": "BICUBIC", "sr_weights": "none"},
            "precision": "BF16-Mixed",
            "accelerator": "CPU",
            "max_minutes": "null",
        }
    )
    assert cfg.data.band_order == [2, 1, 0, 3] and cfg.data.batch_size == 6
    assert cfg.data.augment is False and cfg.model.weights is None
    assert (cfg.optim.optimizer, cfg.optim.schedule, cfg.optim.lr) == ("adamw", "cosine", 5e-4)
    assert (cfg.upscale.factor, cfg.upscale.method, cfg.upscale.sr_weights) == (2, "bicubic", None)
    assert (cfg.precision, cfg.accelerator, cfg.max_minutes) == ("bf16-mixed", "cpu", None)
    assert config_from_dict({"model": {"weights": "None"}}).model.weights is None


def test_configs_stay_mutable_and_compare_by_value() -> None:
    cfg = config_from_dict({})
    cfg.data.root = "/x"
    cfg.resume = True
    assert cfg.to_dict()["data"]["root"] == "/x" and cfg.to_dict()["resume"] is True
    assert config_from_dict(cfg.to_dict()) == cfg


def test_every_field_is_documented() -> None:
    from pydantic import BaseModel

    def walk(model: type[BaseModel]) -> None:
        for name, info in model.model_fields.items():
            assert info.description and len(info.description) > 10, f"{model.__name__}.{name}"
            sub = info.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                walk(sub)

    walk(TrainConfig)


def test_a_section_that_is_not_a_mapping_in_yaml_names_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("data: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == f"{p}: data: expected a mapping of options, got 5"
    p.write_text("lr: 1e-3\n")
    with pytest.raises(
        ConfigError, match=r"c\.yaml: unknown option lr \(did you mean optim\.lr\?\)"
    ):
        load_config(p)


def test_example_config_loads(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "docs" / "train-config.example.yaml"
    cfg = load_config(example)
    raw = yaml.safe_load(example.read_text())
    assert set(raw) >= {"data", "model", "loss", "optim", "upscale", "out", "epochs"}
    assert cfg.data.root == raw["data"]["root"] and cfg.out == raw["out"]
    assert cfg.optim.lr == pytest.approx(float(raw["optim"]["lr"]))
    assert cfg.data.batch_size == raw["data"]["batch_size"]
    assert cfg.model.encoder == raw["model"]["encoder"] and cfg.upscale.factor == 2
    assert cfg.loss.params == raw["loss"]["params"]
    # the example documents every option: each field appears in the file
    text = example.read_text()
    for section, value in cfg.to_dict().items():
        keys = value if isinstance(value, dict) and section != "devices" else {section: None}
        for key in keys:
            assert f"{key}:" in text, f"{section}.{key} missing from the example"


# --------------------------------------------------------------------------- train command


def test_print_config_prints_the_resolved_yaml_and_creates_nothing(tmp_path: Path, capsys) -> None:
    from pvdetect.cli import main

    p = tmp_path / "c.yaml"
    p.write_text("data:\n  batch_size: 8\n  root: /somewhere\noptim:\n  lr: 1e-3\nepochs: 4\n")
    run = tmp_path / "run"
    code = main(["train", "--config", str(p), "--epochs", "9", "--out", str(run),
                 "--band-order", "2,1,0,3", "--no-augment", "--print-config"])  # fmt: skip
    assert code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["epochs"] == 9 and printed["data"]["batch_size"] == 8  # flag over YAML
    assert printed["optim"]["lr"] == pytest.approx(1e-3) and printed["out"] == str(run)
    assert printed["data"]["band_order"] == [2, 1, 0, 3] and printed["data"]["augment"] is False
    assert printed["data"]["root"] == "/somewhere" and printed["data"]["test_batch_size"] == 40
    assert config_from_dict(printed).epochs == 9
    assert sorted(tmp_path.iterdir()) == [p]
    # without DATA or --out it still prints (root and out stay null)
    assert main(["train", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == TrainConfig().to_dict()
    # a bad value is still an error
    assert main(["train", "--print-config", "--lr", "-1"]) == 2
    assert "optim.lr: must be > 0" in capsys.readouterr().err


def _train_help() -> str:
    from pvdetect.cli import build_parser

    parser = build_parser("train")
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"].format_help()


# every flag `pvdetect train` had before its options were generated from the models
TRAIN_FLAGS = (
    "--config --out --arch --encoder --weights --epochs --batch-size --val-batch-size "
    "--test-batch-size --accumulate --lr --schedule --warmup --weight-decay --optimizer "
    "--gradient-clip --loss --precision --compile --no-compile --accelerator --devices "
    "--num-nodes --strategy --upscale-factor --upscale-method --sr-weights --crop-size "
    "--crop-pv --no-augment --drop-empty --oversample-pv --num-workers --cache-dir "
    "--band-order --val-fraction --test-fraction --seed --resume --tensorboard --max-minutes "
    "--val-every --max-train-batches --max-val-batches --threshold-metric --monitor "
    "--patience --overlap --no-progress"
).split()
# flags added since: several sources, synthetic chips, spectral augmentation, cross-validation,
# exclusion lists, mirrored windows, fine-tuning from a bundle
NEW_TRAIN_FLAGS = (
    "--data --synthetic --synthetic-style --synthetic-chip-size --synthetic-seed "
    "--spectral-augment --no-spectral-augment --augment-p --augment-gain --augment-offset "
    "--augment-brightness --augment-haze --cv --bands --synthetic-off-last --exclude "
    "--mirror-windows --init-from --blend"
).split()


def test_train_flags_are_those_of_before() -> None:
    import re

    from pvdetect.cli import build_parser

    parser = build_parser("train")
    sub = next(a for a in parser._actions if a.dest == "command")
    flags = {s for a in sub.choices["train"]._actions for s in a.option_strings}
    # -v/-q are every command's (cli.py); the rest are train's own, as before
    assert flags == {
        "-h",
        "--help",
        "--print-config",
        "-v",
        "--verbose",
        "-q",
        "--quiet",
        *TRAIN_FLAGS,
        *NEW_TRAIN_FLAGS,
    }
    text = _train_help()
    assert "--band-order I,J,K,L" in text and "--weights imagenet|PATH|none" in text
    assert "--compile, --no-compile" in text and "--upscale-factor {1,2,4}" in text
    assert re.search(r"--batch-size BATCH_SIZE\s+.*\(default: 5\)", text)


def test_flags_map_to_their_config_keys() -> None:
    from pvdetect.cli import build_parser
    from pvdetect.commands.train import config_from_args

    args = build_parser("train").parse_args(
        ["train", "D", "--out", "R", "--batch-size", "3", "--lr", "0.01", "--no-augment",
         "--no-progress", "--resume", "--tensorboard", "--no-compile", "--band-order", "3,2,1,0",
         "--devices", "0,1", "--upscale-factor", "2", "--crop-size", "64", "--weights", "none",
         "--schedule", "cosine", "--loss", "dice", "--val-every", "2"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.data.root, cfg.out, cfg.data.batch_size, cfg.optim.lr) == ("D", "R", 3, 0.01)
    assert (cfg.data.augment, cfg.progress, cfg.resume, cfg.tensorboard) == (
        False,
        False,
        True,
        True,
    )
    assert cfg.compile is False and cfg.data.band_order == [3, 2, 1, 0] and cfg.devices == [0, 1]
    assert (cfg.upscale.factor, cfg.data.crop_size, cfg.model.weights) == (2, 64, None)
    assert (cfg.optim.schedule, cfg.loss.name, cfg.val_every) == ("cosine", "dice", 2)
    # flags not given leave the defaults alone
    plain = config_from_args(build_parser("train").parse_args(["train", "D", "--out", "R"]))
    assert plain.data.augment is True and plain.compile is False and plain.progress is True


def test_abbreviated_flags_are_refused(tmp_path: Path, capsys) -> None:
    from pvdetect.cli import main

    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    assert main(["train", str(data), "--out", str(run), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # argparse's usage, then one error line (the main parser reports unrecognized arguments)
    assert err[0].startswith("usage: pvdetect")
    assert err[-1] == "pvdetect: error: unrecognized arguments: --device cuda"
    assert sum("error:" in line for line in err) == 1
    assert not run.exists() and list(data.iterdir()) == []
    assert main(["--vers"]) == 2  # the main parser too


@pytest.mark.parametrize(("crop", "needle"), [(7, "at least 32 px"), (16, "at least 32 px")])
def test_crop_smaller_than_the_model_accepts_is_refused(
    tmp_path: Path, capsys, crop: int, needle: str
) -> None:
    from pvdetect.cli import main

    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    code = main(
        ["train", str(data), "--out", str(run), "--crop-size", str(crop), "--weights", "none"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith(f"pvdetect train: error: data.crop_size: {crop} px is too small"), err
    assert needle in err and "unet" in err
    assert not run.exists() and list(data.iterdir()) == []


def test_check_model_sizes() -> None:
    from pvdetect.config import check_model_sizes

    check_model_sizes(config_from_dict({"data": {"crop_size": 32}}))
    check_model_sizes(config_from_dict({}))  # the whole chip: checked once the chips are known
    with pytest.raises(ConfigError, match="at least 16 px"):
        check_model_sizes(config_from_dict({"model": {"arch": "pspnet"}, "data": {"crop_size": 8}}))
    with pytest.raises(ConfigError, match="unknown architecture"):
        check_model_sizes(config_from_dict({"model": {"arch": "nonet"}}))


def test_booleans_are_not_numbers() -> None:
    for data, message in (
        ({"upscale": {"factor": True}}, "upscale.factor: expected an integer, got True"),
        ({"optim": {"lr": False}}, "optim.lr: expected a number, got False"),
        ({"devices": True}, "devices: expected an integer, got True"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            config_from_dict(data)
    assert config_from_dict({"precision": 32}).precision == "32"  # YAML reads 32 as a number
