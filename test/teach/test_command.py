"""``dli-perception teach`` options: the teach set's parameters, refusals in one line with exit code 1."""

from __future__ import annotations

import yaml

from dli_perception import cli


def test_dry_run_prints_the_teach_set_with_one_dataset_for_recorder_and_trainer(capsys, tmp_path):
    data = str(tmp_path / "data")
    rc = cli.main(["teach", "--dry-run", f"dataset_dir:={data}", "epochs:=3", "-p", "camera_node.fps:=12.0"])
    out = capsys.readouterr().out
    assert rc == 0
    params = yaml.safe_load(out[out.index("camera_node:") :])
    assert list(params) == ["camera_node", "recorder_node", "trainer_node", "classifier_node", "reaction_node"]
    assert params["recorder_node"]["ros__parameters"]["dataset_dir"] == data
    assert params["trainer_node"]["ros__parameters"]["dataset_dir"] == data
    assert params["trainer_node"]["ros__parameters"]["epochs"] == 3
    assert params["camera_node"]["ros__parameters"]["fps"] == 12.0


def test_refusals_say_why_in_one_line(capsys):
    assert cli.main(["teach", "--host", "0.0.0.0", "--no-token", "--connect"]) == 1
    assert "anyone on the network" in capsys.readouterr().err
    assert cli.main(["teach", "--connect", "epochs:=3"]) == 1
    assert "--connect starts no node" in capsys.readouterr().err
    assert cli.main(["teach", "--port", "70000"]) == 1
    assert "must be 0..65535" in capsys.readouterr().err
    assert cli.main(["teach", "--dry-run", "epochz:=3"]) == 1
    assert "epochz" in capsys.readouterr().err
