"""Colour images at any size: data.channels and data.image_size honoured by the folder reader,
the conv4, every GAN network and the metric embedding, end to end (train, search dry run,
predict, sample) on a generated RGB folder at 32x32 and 84x84."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from metagan import api
from metagan.config import ConfigError, build_config
from metagan.data import load_splits
from metagan.run import train

from .conftest import run_cli, tiny_data
from .test_contract import tiny_run

CLASSES, PER_CLASS = 30, 8


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/<class>/*.png: 30 classes of 8 colour images (50x40, a class's own hue and shape
    on a grey ground, jittered), so that colour and shape tell the classes apart."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("rgb") / "folder"
    yy, xx = np.mgrid[0:40, 0:50]
    for c in range(CLASSES):
        colour = rng.integers(0, 256, 3)
        radius = 6 + c % 5 * 2
        d = root / f"class{c:02d}"
        d.mkdir(parents=True)
        for i in range(PER_CLASS):
            cy, cx = 20 + rng.integers(-4, 5), 25 + rng.integers(-4, 5)
            image = np.full((40, 50, 3), 128, np.uint8)
            inside = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2) if c % 2 else \
                ((abs(yy - cy) < radius) & (abs(xx - cx) < radius))
            image[inside] = colour
            image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(d / f"{i}.png")
    return root


def rgb_data(root: Path, size: int) -> dict[str, object]:
    return {"data.source": "folder", "data.root": str(root), "data.channels": 3,
            "data.image_size": size, "data.val_groups": 8, "data.test_groups": 8}


@pytest.mark.parametrize("size", [32, 84])
def test_the_reader_keeps_colour_at_the_configured_size(rgb_folder: Path, size: int) -> None:
    cfg = build_config(tiny_data("protonet", **rgb_data(rgb_folder, size)))
    splits = load_splits(cfg.data)
    assert splits.train.images.shape[1:] == (size, size, 3) and splits.train.channels == 3
    # Colour is kept: the three channels of a class differ.
    assert not np.array_equal(splits.train.images[..., 0], splits.train.images[..., 1])


@pytest.mark.parametrize("size", [32, 84])
def test_protonet_trains_searches_and_predicts_in_colour(rgb_folder: Path, tmp_path: Path,
                                                         size: int) -> None:
    data = tiny_data("protonet", **rgb_data(rgb_folder, size),
                     **{"train.iterations": 3, "schedule.eval_every": 3})
    train(build_config(data), tmp_path / "run")
    model = api.load_model(tmp_path / "run")
    files = [sorted((rgb_folder / f"class{c:02d}").glob("*.png")) for c in range(5)]
    result = model.predict([f[0] for f in files], list("abcde"), [f[1] for f in files])
    assert result.probabilities.shape == (5, 5)
    # A tensor of the wrong channel count or size is one line naming what the model takes.
    with pytest.raises(ConfigError, match=f"this model takes images of 3 channels at "
                                          f"{size}x{size}") as e:
        model.predict(torch.rand(5, 1, size, size), list("abcde"), [f[1] for f in files])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"tensor of shape \(5, 3, 28, 28\)"):
        model.predict(torch.rand(5, 3, 28, 28), list("abcde"), [f[1] for f in files])
    ok = model.predict(torch.rand(5, 3, size, size), list("abcde"), [f[1] for f in files])
    assert ok.probabilities.shape == (5, 5)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "base": data, "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}},
        "search": {"num_samples": 2, "max_concurrent": 1}, "scheduler": {"name": "none"}}))
    r = run_cli("search", str(space), "--dry-run")
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("method", ["fewshot_gan", "dagan", "metagan"])
@pytest.mark.parametrize("size", [32, 84])
def test_every_gan_method_trains_and_samples_in_colour(rgb_folder: Path, tmp_path: Path,
                                                       method: str, size: int) -> None:
    algorithm = "fomaml" if method == "metagan" else "protonet"
    data = tiny_run(method, algorithm, **rgb_data(rgb_folder, size),
                    **{"train.iterations": 1, "schedule.checkpoint_every": 0})
    train(build_config(data), tmp_path / "run")
    model = api.load_model(tmp_path / "run")
    character = rgb_folder / "class03"
    drawn = model.sample(character, 3, seed=0)
    assert drawn.shape == (3, 3, size, size) and 0 <= drawn.min() and drawn.max() <= 1
    if method == "fewshot_gan":  # the CLI's grid keeps the colours
        grid = tmp_path / "grid.png"
        r = run_cli("sample", str(tmp_path / "run"), "--support", str(character), "--out",
                    str(grid), "--samples", "4")
        assert r.returncode == 0, r.stderr[-2000:]
        assert Image.open(grid).mode == "RGB"


def test_channels_are_checked_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.channels: Omniglot is grayscale"):
        build_config(tiny_data("protonet", **{"data.channels": 3}))
    with pytest.raises(ConfigError, match=r"data.channels: 1 \(grayscale\) or 3 \(RGB\), got 2"):
        build_config(tiny_data("protonet", **{"data.source": "folder",
                                              "data.root": str(tmp_path), "data.channels": 2}))


def test_affine_jitter_keeps_a_light_background(tmp_path: Path) -> None:
    """Jittered folder images fill their uncovered corners with the edge pixels (a white or
    coloured ground stays itself); Omniglot's jitter keeps filling with its zero background."""
    root = tmp_path / "white"
    for c in range(7):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(4):
            image = np.full((28, 28), 255, np.uint8)
            image[10:18, 4 + c * 2:8 + c * 2] = 0  # a dark bar on white paper
            Image.fromarray(image).save(root / f"c{c}" / f"{i}.png")
    from metagan.data.episodes import TaskSampler

    cfg = build_config(tiny_data("protonet", **{
        "data.source": "folder", "data.root": str(root), "data.rotations": False,
        "data.affine_augment": True, "data.val_groups": 2, "data.test_groups": 2,
        "task.ways": 2}))
    from metagan.loop import EpisodeLoop

    loop = EpisodeLoop(cfg)
    corners = loop.sampler.sample(8).support_x[..., [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.min() > 0.99  # white corners, no black wedges
    zeros = TaskSampler(loop.splits.train, 2, 1, 1, 0, affine=True)  # the Omniglot filling
    assert zeros.sample(8).support_x[..., [0, 0, -1, -1], [0, -1, 0, -1]].min() < 0.5
