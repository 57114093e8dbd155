"""The training options table and the train-and-export service (no training here: see test_training.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dli_perception.commands import train as train_cmd
from dli_perception.core.training import TrainConfig
from dli_perception.core.training.options import OPTIONS_BY_NAME, TRAIN_OPTIONS, config_from_options
from dli_perception.core.training.service import TrainJob, checkpoint_dir_for, export_job, job_from_options
from dli_perception.errors import ConfigError, DatasetError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    train_cmd.add_train_arguments(parser)
    return parser


def test_every_cli_option_is_a_flag_whose_help_shows_the_table_default():
    actions = {a.dest: a for a in _parser()._actions}
    for option in TRAIN_OPTIONS:
        if not option.cli:
            assert option.name not in actions, option.name
            continue
        action = actions[option.name]
        assert option.cli_flag in action.option_strings
        assert action.default is None  # omitted flags leave TrainConfig's default in place
        if isinstance(option.default, bool):
            assert ("on by default" if option.default else "off by default") in action.help
        elif option.default not in (None, ""):
            assert f"(default {option.default})" in action.help, option.name


def test_table_defaults_are_train_config_defaults():
    defaults = TrainConfig()
    for option in TRAIN_OPTIONS:
        if option.name in TrainConfig.__dataclass_fields__ and option.name != "max_images_per_class":
            assert getattr(defaults, option.name) == option.default, option.name
    assert OPTIONS_BY_NAME["image_size"].default == defaults.preprocess.size
    assert config_from_options({}).to_dict() == defaults.to_dict()
    # 0 images per class means all of them, as None does in TrainConfig
    assert config_from_options({"max_images_per_class": 0}).max_images_per_class is None


def test_node_values_and_cli_flags_give_the_same_config():
    node_values = {o.name: o.node_value for o in TRAIN_OPTIONS if o.node}
    node_values.update(epochs=4, lr=0.01, image_size=96, augment=False, optimizer="sgd", num_workers=0)
    args = _parser().parse_args(
        "d --out m --epochs 4 --lr 0.01 --size 96 --no-augment --optimizer sgd --workers 0".split()
    )
    from_node, from_cli = config_from_options(node_values), train_cmd.config_from_args(args)
    assert from_node.to_dict() == from_cli.to_dict()
    assert (from_cli.preprocess.size, from_cli.preprocess.resize_size) == (96, 110)


def test_invalid_options_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        config_from_options({"epochs": 0})
    assert OPTIONS_BY_NAME["weights"].validate("  ") == "must not be empty"
    assert "not one of" in OPTIONS_BY_NAME["mode"].validate("everything")


def test_job_paths(tmp_path):
    dataset = tmp_path / "ds"
    values = {"dataset_dir": str(dataset), "model_dir": str(tmp_path / "m"), "checkpoint_dir": ""}
    with pytest.raises(DatasetError, match="does not exist"):
        job_from_options(values)
    dataset.mkdir()
    job = job_from_options({**values, "torch_threads": 2})
    assert job.checkpoint_dir == tmp_path / "m.checkpoints" and job.torch_threads == 2
    with pytest.raises(ConfigError, match="invalid training options: .*epochs"):
        job_from_options({**values, "epochs": 0})
    with pytest.raises(ConfigError, match="must not be inside dataset_dir"):
        job_from_options({**values, "checkpoint_dir": str(dataset / "ckpt")})
    (tmp_path / "link").symlink_to(dataset)
    with pytest.raises(ConfigError, match="must not be inside dataset_dir"):
        job_from_options({**values, "model_dir": str(tmp_path / "link" / "m")})
    assert checkpoint_dir_for(Path("/x/model"), None) == Path("/x/model.checkpoints")
    assert checkpoint_dir_for(Path("/x/model"), "/y/c") == Path("/y/c")


class _Cancelled:
    cancelled = True
    history = ()


def test_a_cancelled_run_is_not_exported_unless_asked(tmp_path):
    job = TrainJob(TrainConfig(), tmp_path, tmp_path / "m", tmp_path / "c")
    events = []
    assert export_job(job, _Cancelled(), on_progress=events.append) is False
    assert export_job(job, _Cancelled(), export_cancelled=True) is False  # no completed epoch to export
    assert events == [] and not (tmp_path / "m").exists()
