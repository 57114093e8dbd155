"""``dli-perception classify`` on real image files with a real model directory."""

from __future__ import annotations

import argparse
import json

import cv2
import pytest
from fixtures_models import build_colour_model_dir, corrupt_copy, solid

from dli_perception.commands import classify
from dli_perception.errors import ConfigError, ModelError


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    classify.register(parser.add_subparsers())
    return parser.parse_args(["classify", *argv])


def _write(path, colour, h=20, w=30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), solid(colour, h, w)[:, :, ::-1])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_colour_model_dir(tmp_path_factory.mktemp("cls_model") / "m", ["red", "green", "blue"])


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    _write(root / "a_red.png", "red")
    _write(root / "b_green.jpg", "green", 64, 48)
    _write(root / "c_blue.PNG", "blue")
    _write(root / "sub" / "d_green.png", "green")
    _write(root / ".hidden" / "e_red.png", "red")
    (root / "notes.txt").write_text("not an image")
    return root


def _lines(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.strip().splitlines()]


def test_folder_prints_label_and_score_per_file(model, images, capsys):
    assert classify.run(_parse(str(model), str(images), "--backend", "onnxruntime", "--batch-size", "2")) == 0
    rows = _lines(capsys.readouterr().out)
    assert [(r[0].split("/")[-1], r[1]) for r in rows] == [
        ("a_red.png", "red"),
        ("b_green.jpg", "green"),
        ("c_blue.PNG", "blue"),
    ]
    assert all(0.9 < float(r[2]) <= 1.0 for r in rows)


def test_recursive_top_k_and_json(model, images, capsys):
    assert classify.run(_parse(str(model), str(images), "-r", "--top-k", "3", "--json", "--threads", "1")) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"].split("/")[-1] for r in results] == [
        "a_red.png",
        "b_green.jpg",
        "c_blue.PNG",
        "d_green.png",
    ]
    for r in results:
        assert [t["label"] for t in r["top"]][0] == r["label"] and len(r["top"]) == 3
        assert sum(t["score"] for t in r["top"]) == pytest.approx(1.0, abs=1e-4)
        assert r["top"][0]["score"] >= r["top"][1]["score"] >= r["top"][2]["score"]


def test_undecodable_file_is_reported_and_the_rest_classified(model, images, capsys):
    broken = images / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated jpeg")
    rc = classify.run(_parse(str(model), str(images / "a_red.png"), str(broken), str(images / "c_blue.PNG")))
    captured = capsys.readouterr()
    assert rc == 1
    assert [r[1] for r in _lines(captured.out)] == ["red", "blue"]
    assert f"{broken}: error: not a decodable image" in captured.err


def test_missing_path_no_images_and_bad_model(model, images, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        classify.run(_parse(str(model), str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images found"):
        classify.run(_parse(str(model), str(tmp_path / "empty")))
    with pytest.raises(ModelError):
        classify.run(_parse(str(corrupt_copy(model, tmp_path / "bad")), str(images), "--backend", "onnxruntime"))


def test_through_the_cli_entry_point(model, images, capsys, monkeypatch):
    """``dli-perception classify`` reaches this module."""
    from dli_perception import cli

    assert "dli_perception.commands.classify" in cli.COMMANDS
    assert cli.main(["classify", str(model), str(images / "b_green.jpg")]) == 0
    assert _lines(capsys.readouterr().out)[0][1] == "green"
    assert cli.main(["classify", str(model), str(images / "nothing_here")]) == 1
