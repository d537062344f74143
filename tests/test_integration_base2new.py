"""Base-to-new through the two scripts, with real Dassl, the tiny CLIP and a generated OxfordPets layout."""
import json
import re

import pytest
from fixtures import pets_setup, run_script, tiny_overrides

pytestmark = pytest.mark.integration


def read_record(folder):
    with open(folder / "results.json") as handle:
        return json.load(handle)


def logged_accuracy(folder):
    logs = sorted(folder.glob("log.txt*"))
    text = "".join(path.read_text() for path in logs)
    return [float(x) for x in re.findall(r"\* accuracy: ([\d.]+)%", text)]


@pytest.mark.parametrize("trainer,config", [("CoOp", "vit_b16_ctxv1"), ("ZeroshotCLIP", "vit_b16")])
def test_base_to_new_scripts(tmp_path, trainer, config):
    root, clip_file = pets_setup(tmp_path)
    env = {"DATA": str(root), "OUTPUT": str(tmp_path / "output"), "SHOTS": "4"}
    overrides = tiny_overrides(clip_file)
    run_script("base2new_train.sh", ["oxford_pets", 1, trainer], overrides, env=env)
    run_script("base2new_test.sh", ["oxford_pets", 1, trainer], overrides, env=env)

    common = f"oxford_pets/shots_4/{trainer}/{config}/seed1"
    base_dir = tmp_path / "output/base2new/train_base" / common
    new_dir = tmp_path / "output/base2new/test_new" / common
    base, new = read_record(base_dir), read_record(new_dir)
    assert (base["subsample"], new["subsample"]) == ("base", "new")
    assert base["num_classes"] == new["num_classes"] == 3
    assert base["num_images"] == new["num_images"] == 12  # 4 test images x 3 classes
    assert (base["trainer"], base["config"], base["seed"], base["shots"]) == (trainer, config, 1, 4)
    # The records hold what the logs print.
    assert logged_accuracy(base_dir) == [round(base["accuracy"], 1)]
    assert logged_accuracy(new_dir) == [round(new["accuracy"], 1)]
    if trainer == "CoOp":
        assert base["eval_only"] is False and base["epoch"] == 2
        assert new["eval_only"] is True and new["epoch"] == 2 and new["model_dir"] == str(base_dir)

    # A finished run is skipped, not redone: the record stays byte for byte.
    before = (new_dir / "results.json").read_bytes()
    again = run_script("base2new_test.sh", ["oxford_pets", 1, trainer], overrides, env=env)
    assert "finished run, skipped" in again.stdout
    assert (new_dir / "results.json").read_bytes() == before
