"""``pvdetect train --init-from BUNDLE [--blend W]``: fine-tuning a trained bundle, the
weight-space blend, and the checks on the start (its model, its folds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pvdetect import cli
from pvdetect.config import load_config
from pvdetect.synth.dataset import generate_dataset

FAST = [
    "--weights", "none", "--batch-size", "2", "--val-batch-size", "4", "--epochs", "1",
    "--max-train-batches", "2", "--num-workers", "0", "--no-progress", "--seed", "3",
    "--precision", "32",
]  # fmt: skip


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two datasets of different landscapes and a start run (FPN) trained on the first."""
    base = tmp_path_factory.mktemp("start")
    generate_dataset(base / "ds1", chips=14, scenes=0, seed=0, chip_size=64)
    generate_dataset(base / "ds2", chips=14, scenes=0, seed=5, chip_size=64)
    run = base / "a"
    args = ["train", str(base / "ds1"), "--out", str(run), "--arch", "fpn", *FAST]
    assert cli.main(args) == 0
    return {"base": base, "ds1": base / "ds1", "ds2": base / "ds2", "a": run}


def _weights(bundle: Path) -> dict[str, torch.Tensor]:
    return load_file(str(bundle / "model.safetensors"))


def _meta(bundle: Path) -> dict:
    return json.loads((bundle / "bundle.json").read_text())


def _checkpoint(run: Path) -> dict[str, torch.Tensor]:
    """The network weights of the checkpoint the run's bundle was made from."""
    name = _meta(run / "bundle")["val_metrics"]["checkpoint"]
    state = torch.load(run / "checkpoints" / name, weights_only=True, map_location="cpu")
    return {k[len("model.") :]: v for k, v in state["state_dict"].items() if k.startswith("model.")}


def test_blend_0_keeps_the_start_and_its_normalisation(start: dict[str, Path]) -> None:
    run = start["base"] / "b0"
    # no --arch: the start's (fpn) is taken; its band statistics, not those of ds2
    args = ["train", str(start["ds2"]), "--out", str(run), "--init-from", str(start["a"]),
            "--blend", "0", "--lr", "1e-7", *FAST]  # fmt: skip
    assert cli.main(args) == 0
    cfg = load_config(run / "config.yaml")
    assert (cfg.model.arch, cfg.model.init_from, cfg.model.blend) == ("fpn", str(start["a"]), 0)
    a, b = _meta(start["a"] / "bundle"), _meta(run / "bundle")
    assert b["arch"] == "fpn"
    for key in ("mean", "std"):
        assert b["band_stats"][key] == a["band_stats"][key]
    # the sources entry still describes ds2's own statistics, which differ
    assert b["sources"][0]["band_stats"]["mean"] != a["band_stats"]["mean"]
    assert b["val_metrics"]["init_from"] == str(start["a"] / "bundle")
    assert b["val_metrics"]["blend"] == 0
    wa, wb = _weights(start["a"] / "bundle"), _weights(run / "bundle")
    assert wa.keys() == wb.keys()
    for k in wa:  # every weight and BatchNorm statistic (the step counters are the run's)
        assert torch.equal(wa[k], wb[k]) or not wa[k].is_floating_point(), k
    # the training started from the start's weights: at lr 1e-7 they barely moved, while the
    # BatchNorm statistics followed ds2
    trained = _checkpoint(run)
    for k in wa:
        if "running_" not in k and wa[k].is_floating_point():
            torch.testing.assert_close(trained[k], wa[k], rtol=0, atol=1e-5)
    assert any(not torch.equal(trained[k], wa[k]) for k in wa if "running_mean" in k)


def test_blend_half_is_the_average_of_start_and_trained(start: dict[str, Path]) -> None:
    run = start["base"] / "b5"
    args = ["train", str(start["ds2"]), "--out", str(run), "--init-from",
            str(start["a"] / "bundle"), "--blend", "0.5", *FAST]  # fmt: skip
    assert cli.main(args) == 0
    wa, wb, trained = _weights(start["a"] / "bundle"), _weights(run / "bundle"), _checkpoint(run)
    moved = 0
    for k, v in wb.items():
        if v.is_floating_point():
            want = (wa[k].double() + 0.5 * (trained[k].double() - wa[k].double())).float()
            torch.testing.assert_close(v, want, rtol=1e-6, atol=1e-7)
            moved += int(not torch.equal(v, wa[k]))
        else:  # BatchNorm step counters: the trained ones
            assert torch.equal(v, trained[k])
    assert moved > 0
    # validated and calibrated as blended: the counts cover ds2's validation pixels
    vm = _meta(run / "bundle")["val_metrics"]
    assert vm["blend"] == 0.5 and vm["tp"] + vm["fp"] + vm["fn"] + vm["tn"] > 0
    # another blend of the finished run: --resume, no training, a new bundle
    assert cli.main(["train", "--out", str(run), "--resume", "--blend", "0", "--no-progress"]) == 0
    assert all(torch.equal(v, wa[k]) for k, v in _weights(run / "bundle").items()
               if v.is_floating_point())  # fmt: skip
    assert all(torch.equal(v, trained[k]) for k, v in _checkpoint(run).items())
    assert _meta(run / "bundle")["val_metrics"]["blend"] == 0


def test_without_blend_the_bundle_holds_the_trained_weights(start: dict[str, Path]) -> None:
    run = start["base"] / "b1"
    args = ["train", str(start["ds2"]), "--out", str(run), "--init-from", str(start["a"]), *FAST]
    assert cli.main(args) == 0
    wb, trained = _weights(run / "bundle"), _checkpoint(run)
    for k in wb:
        assert torch.equal(wb[k], trained[k]), k


def _error(capsys: pytest.CaptureFixture) -> str:
    text = capsys.readouterr().err
    assert "Traceback" not in text
    lines = [s for s in text.splitlines() if s.startswith("pvdetect train: error:")]
    assert len(lines) == 1, text
    return lines[0]


def test_bad_starts_are_one_line_errors(
    start: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ds, a = str(start["ds2"]), str(start["a"])
    out = tmp_path / "run"
    cases = [
        (["--blend", "0.5"], "model.blend: needs model.init_from"),
        (["--init-from", a, "--encoder", "resnet34"], "a fpn/resnet18 bundle of 4 bands"),
        (["--init-from", a, "--arch", "unet"], "pass --arch and --encoder of the bundle"),
        (["--init-from", str(tmp_path / "nothing")], "nothing: bundle not found"),
        (["--init-from", a, "--blend", "1.5"], "blend"),
    ]
    for extra, message in cases:
        assert cli.main(["train", ds, "--out", str(out), *extra, *FAST]) == 2, extra
        assert message in _error(capsys), extra
        assert not out.exists(), extra


def test_cv_folds_start_from_the_folds_of_a_cv_run(
    start: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    base, ds = start["base"], str(start["ds1"])
    a_cv = base / "a_cv"
    assert cli.main(["train", ds, "--out", str(a_cv), "--cv", "2", *FAST]) == 0
    run = base / "b_cv"
    args = ["train", ds, "--out", str(run), "--cv", "2", "--init-from", str(a_cv),
            "--blend", "0", *FAST]  # fmt: skip
    assert cli.main(args) == 0
    for k in (1, 2):
        wa = _weights(a_cv / f"fold-{k}" / "bundle")
        wb = _weights(run / f"fold-{k}" / "bundle")
        assert all(torch.equal(wa[n], wb[n]) for n in wa if wa[n].is_floating_point()), k
    w1, w2 = _weights(a_cv / "fold-1" / "bundle"), _weights(a_cv / "fold-2" / "bundle")
    assert any(not torch.equal(w1[n], w2[n]) for n in w1)  # each fold its own start
    capsys.readouterr()
    # folds dealt with another seed: refused, nothing written
    other = base / "b_cv_seed"
    args = ["train", ds, "--out", str(other), "--cv", "2", "--init-from", str(a_cv),
            *FAST[:-4], "--seed", "4", "--precision", "32"]  # fmt: skip
    assert cli.main(args) == 2
    assert "its folds were dealt otherwise (cv 2, seed 3" in _error(capsys)
    assert not (other / "fold-1" / "bundle").exists()
    # a cross-validation run without --cv: which fold's bundle is meant?
    assert cli.main(["train", ds, "--out", str(base / "b_nocv"), "--init-from", str(a_cv),
                     *FAST]) == 2  # fmt: skip
    assert "a cross-validation run (one bundle per fold)" in _error(capsys)
