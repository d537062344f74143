"""CoCoOp and MaPLe through the base-to-new scripts with their default (official) configs, real Dassl and a tiny
CLIP deep enough for MaPLe's prompt depth of 9."""
import json

import pytest
import torch
from fixtures import make_split_dataset, run_script, save_tiny_clip, tiny_overrides

pytestmark = pytest.mark.integration

LEARNED = {
    "CoCoOp": {"prompt_learner.ctx", "meta_net.linear1.weight", "meta_net.linear1.bias", "meta_net.linear2.weight",
               "meta_net.linear2.bias"},
    "MaPLe": {"prompt_learner.ctx", "visual_projection.weight", "visual_projection.bias"}
    | {f"deep_text_prompts.{k}" for k in range(8)}
    | {f"deep_visual_projections.{k}.{w}" for k in range(8) for w in ("weight", "bias")},
}
CONFIG = {"CoCoOp": "vit_b16_c4_ep10_batch1_ctxv1", "MaPLe": "vit_b16_c2_ep5_batch4_2ctx"}


def read_record(folder):
    with open(folder / "results.json") as handle:
        return json.load(handle)


@pytest.mark.parametrize("trainer", ["CoCoOp", "MaPLe"])
def test_base_to_new_scripts(tmp_path, trainer):
    root = tmp_path / "data"
    make_split_dataset(str(root), per_split=(6, 2, 3))
    clip_file = save_tiny_clip(str(tmp_path / "tiny_clip.pt"), transformer_layers=9, vision_layers=9)
    env = {"DATA": str(root), "OUTPUT": str(tmp_path / "output"), "SHOTS": "4"}
    overrides = tiny_overrides(clip_file)
    run_script("base2new_train.sh", ["oxford_pets", 1, trainer], overrides, env=env)
    run_script("base2new_test.sh", ["oxford_pets", 1, trainer], overrides, env=env)

    config = CONFIG[trainer]  # chosen by the scripts when none is given
    common = f"oxford_pets/shots_4/{trainer}/{config}/seed1"
    base_dir = tmp_path / "output/base2new/train_base" / common
    new_dir = tmp_path / "output/base2new/test_new" / common
    base, new = read_record(base_dir), read_record(new_dir)
    assert (base["trainer"], base["config"], new["config"]) == (trainer, config, config)
    assert (base["subsample"], new["subsample"]) == ("base", "new")
    assert base["num_images"] == new["num_images"] == 9  # 3 test images x 3 classes
    assert base["eval_only"] is False and base["epoch"] == 2
    # The test script found the last epoch by itself and loaded the trained model.
    assert new["eval_only"] is True and new["epoch"] == 2 and new["model_dir"] == str(base_dir)
    log = "".join(path.read_text() for path in new_dir.glob("log.txt*"))
    assert "model.pth.tar-2 (epoch 2)" in log

    # The checkpoint holds the learned parameters and nothing of the frozen CLIP or the class-name buffers.
    checkpoint = torch.load(base_dir / "prompt_learner/model.pth.tar-2", map_location="cpu", weights_only=True)
    assert set(checkpoint["state_dict"]) == LEARNED[trainer]
    assert all(value.dtype == torch.float32 for value in checkpoint["state_dict"].values())
