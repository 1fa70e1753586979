"""Transfer learning: Greek letters in MNIST form, pretrained weights that cannot be fetched, continued training.

That frozen weights stay exactly the source run's is checked for every experiment with `freeze` in
test_experiments (greek_transfer), along with its leave-one-out figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torchvision.models._api as torchvision_weights

from test_experiments import TINY, run_tiny
from training import fit
from training.checkpoint import load_checkpoint
from training.data import IMAGE_SPECS, load_data
from training.models import PretrainedUnavailable, build_model
from training.preprocessing import decode_image, prepare_image
from training.registry import get_config
from training.run import RunOptions, run_experiment


def test_greek_letters_are_prepared_by_the_shared_preprocessing(data_root: Path) -> None:
    bundle = load_data(get_config("greek_transfer"), data_root)
    assert bundle.class_names == ("alpha", "beta", "gamma") and bundle.input_shape == (1, 28, 28)
    path = data_root / "greek" / "train" / "beta" / "beta_002.png"
    expected = prepare_image(decode_image(path.read_bytes()), IMAGE_SPECS["greek"])
    index = sorted(p.name for p in (data_root / "greek" / "train").rglob("*.png")).index(path.name)
    got = bundle.train.images[index].numpy() / 255
    np.testing.assert_allclose(got, expected, atol=0.5 / 255)
    assert got[0, 0, 0] == 0 and got.max() > 0.9  # inverted: white strokes on black, as MNIST


def test_pretrained_weights_offline_say_how_to_go_on(monkeypatch, tmp_path: Path) -> None:
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision_weights, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedUnavailable, match="--weights none") as err:
        build_model("resnet50", (3, 32, 32), 10, {}, pretrained="IMAGENET1K_V2")
    assert "resnet50-11ad3fa6.pth" in str(err.value)  # where to put the file by hand
    with pytest.raises(PretrainedUnavailable, match="no pretrained weights"):
        build_model("mlp", (1, 28, 28), 10, {}, pretrained="IMAGENET1K_V2")


def test_fit_weights_option(monkeypatch, data_root: Path, tmp_path: Path, capsys) -> None:
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision_weights, "load_state_dict_from_url", offline)
    common = ["cifar_resnet50", "--quick", "--device", "cpu", "--data-root", str(data_root),
              "--runs-dir", str(tmp_path)]
    assert fit.main(common) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: pretrained weights") and "--weights none" in err and "Traceback" not in err
    ran = []  # training ResNet-50 is the end-to-end test's job; here only the config matters
    monkeypatch.setattr(fit, "run_experiment", lambda cfg, opts: ran.append(cfg) or {"metrics": {"test_accuracy": 0}})
    assert fit.main([*common, "--weights", "none"]) == 0 and ran[0].pretrained is None
    assert fit.main([*common, "--weights", "IMAGENET1K_V1"]) == 0 and ran[1].pretrained == "IMAGENET1K_V1"


def test_mnist_cnn_continues_training(data_root: Path, tmp_path: Path) -> None:
    """Report C: a few epochs, then continue from the saved model and optimizer (constant schedule)."""
    run_tiny("mnist_cnn", data_root, tmp_path, artifacts=False)
    cfg = get_config("mnist_cnn").replace(**{**TINY, "epochs": 2})  # the same run, planned longer
    report = run_experiment(cfg, RunOptions(data_root=data_root, runs_dir=tmp_path / "runs", device="cpu",
                                            resume=True, artifacts=False, command="continue"))
    state = load_checkpoint(tmp_path / "runs" / "mnist_cnn" / "checkpoint.pt")
    assert state["epoch"] == 2 and [r["epoch"] for r in state["history"]] == [1, 2]
    assert report["command"].endswith("(then 1 x --resume)")
    assert "momentum_buffer" in str(state["optimizer"]["state"])  # the optimizer's state came along
