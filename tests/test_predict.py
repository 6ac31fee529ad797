"""Using a trained model on a user's own images: FewShotModel.predict / sample, `metagan
predict` and `metagan sample --support`, all from the checkpoint alone (no training data)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metagan import api
from metagan.config import ConfigError, build_config
from metagan.data.preprocess import read_file
from metagan.run import train

from .conftest import run_cli, tiny_data
from .test_contract import ENTRIES, IDS, make_loop, splits  # noqa: F401  (fixture)


def character_files(root: Path, names: list[str], per: int = 2) -> list[list[Path]]:
    """The first `per` drawings of each named character folder."""
    return [sorted((root / n).glob("*.png"))[:per] for n in names]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory, omniglot_folder: Path
               ) -> tuple[Path, Path]:
    """A tiny ProtoNet trained on a copy of the character folder, the copy then deleted:
    (run directory, the original folder to draw the user's images from)."""
    base = tmp_path_factory.mktemp("folder-run")
    data_copy = base / "train-data"
    shutil.copytree(omniglot_folder, data_copy)
    data = tiny_data("protonet", **{"data.source": "folder", "data.root": str(data_copy),
                                    "data.val_groups": 20, "data.test_groups": 20,
                                    "train.iterations": 3})
    result = train(build_config(data), base / "run")
    assert "test_per_alphabet" not in result  # a folder's groups are its classes, not alphabets
    shutil.rmtree(data_copy)  # the model is used where its training data is not
    return base / "run", omniglot_folder


def val_characters(run: Path) -> list[str]:
    return json.loads((run / "splits.json").read_text())["val"]


def test_predict_loads_and_classifies_without_the_training_data(folder_run) -> None:
    run, chars = folder_run
    model = api.load_model(run)
    names = val_characters(run)[:5]
    files = character_files(chars, names, per=3)
    support = [f[0] for f in files]
    queries = [q for f in files for q in f[1:]]
    result = model.predict(support, names, queries)
    assert result.classes == sorted(names)
    assert result.probabilities.shape == (10, 5)
    assert torch.allclose(result.probabilities.sum(-1), torch.ones(10))
    assert result.labels == [result.classes[i] for i in result.probabilities.argmax(-1)]
    # Evaluating over the run's own splits needs the data: one line naming it.
    with pytest.raises(ConfigError, match="data.root: dataset path .* does not exist"):
        model.per_alphabet_accuracy()


def test_files_pil_images_and_tensors_are_one_input(folder_run) -> None:
    """The same drawings as paths, as PIL images and as preprocessed tensors predict the same;
    the tensor is what the training data's reader makes of the file."""
    run, chars = folder_run
    model = api.load_model(run)
    names = val_characters(run)[:3]
    files = character_files(chars, names)
    support, queries = [f[0] for f in files], [f[1] for f in files]
    by_path = model.predict(support, names, queries)
    by_pil = model.predict([Image.open(p) for p in support], names,
                           [Image.open(p) for p in queries])
    size = model.config.data.image_size
    as_tensor = [torch.from_numpy(read_file(p, size, invert=False).copy()).float().div(255)[None]
                 for p in support]
    by_tensor = model.predict(torch.stack(as_tensor), names, queries)
    assert torch.equal(by_path.probabilities, by_pil.probabilities)
    assert torch.equal(by_path.probabilities, by_tensor.probabilities)
    # A folder stands for its image files.
    one = chars / names[0]
    assert model.predict([one, chars / names[1]], ["a"] * 20 + ["b"] * 20,
                         queries).probabilities.shape == (3, 2)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(2, 3, 28, 28), r"tensor of shape \(2, 3, 28, 28\); this model takes images of "
                               r"1 channel at 28x28"),
    (torch.rand(2, 1, 32, 32), r"tensor of shape \(2, 1, 32, 32\)"),
    (torch.rand(28, 28), r"tensor of shape \(28, 28\)"),
    (torch.full((1, 1, 28, 28), 2.0), r"values must be finite and in \[0, 1\]"),
    ("no/such/file.png", r"no/such/file.png: no such image file"),
    (3.5, r"expected a tensor, a PIL image or a file path, got float"),
])
def test_a_wrong_image_is_one_line(folder_run, bad, message: str) -> None:
    model = api.load_model(folder_run[0])
    good = torch.rand(2, 1, 28, 28)
    with pytest.raises(ConfigError, match=message) as e:
        model.predict(bad, ["a", "b"], good)
    assert "\n" not in str(e.value)


def test_an_unreadable_image_file_is_one_line(folder_run, tmp_path: Path) -> None:
    model = api.load_model(folder_run[0])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ConfigError, match=r"broken.png: not a readable image") as e:
        model.predict([broken, broken], ["a", "b"], [broken])
    assert "\n" not in str(e.value)


def test_labels_must_fit_the_task_and_the_head(folder_run, tmp_path: Path) -> None:
    model = api.load_model(folder_run[0])
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ConfigError, match="3 labels for 4 support images"):
        model.predict(x, ["a", "b", "c"], x)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        model.predict(x, ["a"] * 4, x)
    # A learner with a 5-way classifier head takes exactly 5 classes.
    train(build_config(tiny_data("fomaml", **{"train.iterations": 1})), tmp_path / "maml")
    maml = api.load_model(tmp_path / "maml")
    with pytest.raises(ConfigError, match="5-way classifier head: give exactly 5 classes"):
        maml.predict(x, ["a", "b", "c", "d"], x)
    five = maml.predict(torch.rand(5, 1, 28, 28), list("abcde"), x)
    assert five.probabilities.shape == (4, 5)


@pytest.mark.parametrize("method, algorithm", ENTRIES, ids=IDS)
def test_every_classifying_method_predicts(method: str, algorithm: str, splits) -> None:  # noqa: F811
    """predict is task_logits on one task: its argmax is what evaluation scores."""
    loop = make_loop(method, algorithm, splits)
    model = api.FewShotModel(loop.cfg, loop.method, Path("unused"))
    episode = loop.sampler.sample(1)
    if not loop.method.classifies:
        with pytest.raises(ConfigError, match="predict needs a method that classifies"):
            model.predict(episode.support_x[0], episode.support_y[0].tolist(), episode.query_x[0])
        return
    result = model.predict(episode.support_x[0], episode.support_y[0].tolist(),
                           episode.query_x[0])
    accuracy = model.accuracy(episode).item()
    hits = [p == y for p, y in zip(result.labels, episode.query_y[0].tolist())]
    assert sum(hits) / len(hits) == pytest.approx(accuracy)
    if not loop.method.samples:
        with pytest.raises(ConfigError, match="sample needs a method that samples"):
            model.sample(episode.support_x[0], 2)


def test_metagan_predict_writes_the_csv(folder_run, tmp_path: Path) -> None:
    run, chars = folder_run
    names = val_characters(run)[:5]
    support, query = tmp_path / "support", tmp_path / "query"
    query.mkdir()
    truth = {}
    for name, files in zip(names, character_files(chars, names, per=3)):
        (support / name).mkdir(parents=True)
        shutil.copy(files[0], support / name / "a.png")
        for i, f in enumerate(files[1:]):
            shutil.copy(f, query / f"{name}-{i}.png")
            truth[f"{name}-{i}.png"] = name
    out = tmp_path / "predictions.csv"
    r = run_cli("predict", str(run), "--support", str(support), "--query", str(query),
                "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert [row["file"] for row in rows] == sorted(truth)
    assert list(rows[0]) == ["file", "label", *(f"p_{n}" for n in sorted(names))]
    for row in rows:
        assert row["label"] in names
        assert sum(float(row[f"p_{n}"]) for n in names) == pytest.approx(1, abs=1e-4)
    # Without --out the CSV goes to standard output, the same rows.
    r2 = run_cli("predict", str(run), "--support", str(support), "--query", str(query))
    assert r2.returncode == 0 and r2.stdout == out.read_text()
    # An output path that cannot be written is refused before any work, nothing written.
    r3 = run_cli("predict", str(run), "--support", str(support), "--query", str(query),
                 "--out", str(tmp_path))
    assert r3.returncode == 2 and r3.stderr.count("\n") == 1 and "is a directory" in r3.stderr
    r4 = run_cli("predict", str(run), "--support", str(tmp_path / "nope"), "--query", str(query))
    assert r4.returncode == 2 and "nope: no such folder" in r4.stderr
    assert "Traceback" not in r3.stderr + r4.stderr


def test_sample_from_your_own_drawings_without_the_training_data(
        tmp_path: Path, omniglot_folder: Path) -> None:
    """A few-shot GAN trained on a folder samples a character given as files, from the
    checkpoint alone; `metagan sample --support` writes the grid."""
    from .test_contract import tiny_run

    data_copy = tmp_path / "train-data"
    shutil.copytree(omniglot_folder, data_copy)
    data = tiny_run("fewshot_gan", **{"data.source": "folder", "data.root": str(data_copy),
                                      "data.val_groups": 24, "data.test_groups": 24,
                                      "train.iterations": 2, "schedule.checkpoint_every": 0})
    train(build_config(data), tmp_path / "gan")
    shutil.rmtree(data_copy)
    model = api.load_model(tmp_path / "gan")
    character = omniglot_folder / sorted(p.name for p in omniglot_folder.iterdir())[0]
    drawn = model.sample(character, 4, seed=1)
    assert drawn.shape == (4, 1, 28, 28) and 0 <= drawn.min() and drawn.max() <= 1
    assert torch.equal(drawn, model.sample(character, 4, seed=1))  # a seed fixes it
    with pytest.raises(ConfigError, match="predict needs a method that classifies"):
        model.predict(character, ["a"], character)
    grid = tmp_path / "grid.png"
    r = run_cli("sample", str(tmp_path / "gan"), "--support", str(character), "--out", str(grid),
                "--samples", "6")
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.asarray(Image.open(grid)).ndim == 2 and "support: 2 drawings" in r.stdout


def test_labels_given_as_a_tensor_are_compared_by_value(folder_run) -> None:
    """Tensor elements hash by identity: four labels of two values are two classes."""
    model = api.load_model(folder_run[0])
    x = torch.rand(4, 1, 28, 28)
    by_tensor = model.predict(x, torch.tensor([0, 0, 1, 1]), x)
    by_list = model.predict(x, [0, 0, 1, 1], x)
    assert by_tensor.classes == [0, 1] and by_tensor.probabilities.shape == (4, 2)
    assert torch.equal(by_tensor.probabilities, by_list.probabilities)
    assert model.predict(x, np.array([3, 3, 7, 7]), x).classes == [3, 7]


def test_a_transparent_background_is_paper_not_ink(tmp_path: Path) -> None:
    """A drawing with a transparent background reads as the same drawing on white: dropping
    alpha would turn the background black (and, inverted for Omniglot, into strokes)."""
    rng = np.random.default_rng(0)
    strokes = rng.random((28, 28)) < 0.2
    opaque = np.where(strokes, 0, 255).astype(np.uint8)
    Image.fromarray(opaque).save(tmp_path / "white.png")
    rgba = np.zeros((28, 28, 4), np.uint8)  # transparent black background
    rgba[strokes] = (0, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    for invert in (False, True):
        assert np.array_equal(read_file(tmp_path / "white.png", 28, invert),
                              read_file(tmp_path / "transparent.png", 28, invert))
