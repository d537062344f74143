"""DualMIPrompt through the base-to-new scripts, with real Dassl, the tiny CLIP and a generated OxfordPets layout."""
import json
import math
import re

import pytest
import torch
from fixtures import pets_setup, run_script, run_train, tiny_overrides

pytestmark = pytest.mark.integration

MI_TERMS = ("loss_ce", "loss_tmi", "mi_bound_text", "kappa_text", "loss_vmi", "mi_bound_vis", "kappa_vis")


def read_record(folder):
    with open(folder / "results.json") as handle:
        return json.load(handle)


def epoch_averages(folder):
    """``{epoch: {name: value}}`` from the per-epoch lines of the log."""
    text = "".join(path.read_text() for path in sorted(folder.glob("log.txt*")))
    out = {}
    for epoch, rest in re.findall(r"epoch \[(\d+)/\d+\] averages: (.*)", text):
        out[int(epoch)] = {name: float(value) for name, value in re.findall(r"(\w+) (-?[\d.]+(?:e-?\d+)?)", rest)}
    return out


def tensorboard_tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("config", ["", "ablation/01_ce_only"])
def test_base_to_new_scripts(tmp_path, config):
    root, clip_file = pets_setup(tmp_path)
    env = {"DATA": str(root), "OUTPUT": str(tmp_path / "output"), "SHOTS": "4"}
    if config:  # an ablation row, named the way the ablation loop names it (here through the environment)
        env.update(TRAINER="DualMIPrompt", CONFIG=config)
    # Otherwise nothing is named: DualMIPrompt is the scripts' default trainer, with its default config.
    overrides = tiny_overrides(clip_file)
    args = ["oxford_pets", 1]
    run_script("base2new_train.sh", args, overrides, env=env)
    run_script("base2new_test.sh", args, overrides, env=env)

    name = config or "vit_b16_c4_ep200_batch32_ctxv1"
    common = f"oxford_pets/shots_4/DualMIPrompt/{name}/seed1"
    base_dir = tmp_path / "output/base2new/train_base" / common
    new_dir = tmp_path / "output/base2new/test_new" / common
    base, new = read_record(base_dir), read_record(new_dir)
    assert (base["trainer"], base["config"], base["subsample"], new["subsample"]) == (
        "DualMIPrompt", name.split("/")[-1], "base", "new")
    assert base["num_classes"] == new["num_classes"] == 3 and new["eval_only"] is True
    assert new["model_dir"] == str(base_dir)

    # Checkpoints hold the context and the critics (with their temperatures) only.
    checkpoint = torch.load(base_dir / "prompt_learner/model.pth.tar-2", weights_only=True)
    learned = sorted(checkpoint["state_dict"])
    if config:  # CE only: CoOp's context and nothing else
        assert learned == ["prompt_learner.ctx"]
    else:
        assert learned == ["prompt_learner.ctx", "text_critic.temperature.log_kappa",
                           "vis_critic.temperature.log_kappa"]

    # Each MI term and its bound, per epoch, beside the loss and accuracy: in the log and in tensorboard.
    averages = epoch_averages(base_dir)
    assert sorted(averages) == [1, 2]
    tags = tensorboard_tags(base_dir)
    expected = ("loss", "acc") + (() if config else MI_TERMS)
    for epoch in (1, 2):
        assert set(expected) <= set(averages[epoch])
        for term in expected:
            assert [value for step, value in tags[f"epoch/{term}"] if step == epoch] == [
                pytest.approx(averages[epoch][term], abs=1e-3)]
        if not config:
            assert averages[epoch]["mi_bound_text"] == pytest.approx(
                torch.tensor(3.0).log().item() - averages[epoch]["loss_tmi"], abs=2e-3)
    assert "train/loss_tmi" in tags if not config else "train/loss_tmi" not in tags


def test_eval_only_on_new_classes_recomputes_both_views(tmp_path):
    """With INFER_BETA 1 the classifier is the hand-crafted view alone, so the trained model evaluated on the new
    classes must score exactly what zero-shot CLIP with the same template scores on them: the hand-crafted features
    are computed for the new classes (the soft ones are checked on new classes by test_dualmiprompt_model.py)."""
    root, clip_file = pets_setup(tmp_path)
    env = {"DATA": str(root), "OUTPUT": str(tmp_path / "output"), "SHOTS": "4"}
    overrides = tiny_overrides(clip_file)
    run_script("base2new_train.sh", ["oxford_pets", 1, "DualMIPrompt"], overrides, env=env)
    model_dir = (tmp_path / "output/base2new/train_base/oxford_pets/shots_4/DualMIPrompt"
                 / "vit_b16_c4_ep200_batch32_ctxv1/seed1")

    def evaluate(trainer, config, out, extra=()):
        load = ["--model-dir", model_dir] if trainer == "DualMIPrompt" else []
        run_train([
            "--root", root, "--seed", 1, "--trainer", trainer, "--dataset-config-file",
            "configs/datasets/oxford_pets.yaml", "--config-file", f"configs/trainers/{trainer}/{config}.yaml",
            "--output-dir", tmp_path / out, "--eval-only", *load,
            *overrides, "DATASET.NUM_SHOTS", 4, "DATASET.SUBSAMPLE_CLASSES", "new", *extra,
        ], env=env)
        return read_record(tmp_path / out)

    zero_shot = evaluate("ZeroshotCLIP", "vit_b16", "zs")
    hand_only = evaluate("DualMIPrompt", "vit_b16_c4_ep200_batch32_ctxv1", "beta1",
                         ["TRAINER.DUALMIPROMPT.INFER_BETA", "1.0"])
    assert hand_only["num_classes"] == zero_shot["num_classes"] == 3
    log = "".join(path.read_text() for path in sorted((tmp_path / "beta1").glob("log.txt*")))
    assert log.count("Hand-crafted features computed for 3 classes") == 1  # at build, for the new classes
    assert hand_only["accuracy"] == zero_shot["accuracy"]
    assert hand_only["macro_f1"] == zero_shot["macro_f1"]


def test_new_options_diagnostics_and_gpa_through_training(tmp_path):
    """Alignment and consistency on, GPA over 3 epochs with spread 0 around epoch 2: the log and the record carry
    the diagnostics (MI ceilings, temperatures, soft/hand cosine, each term's context gradient once per epoch), and
    the context that is saved and evaluated after the last epoch is epoch 2's."""
    root, clip_file = pets_setup(tmp_path)
    env = {"DATA": str(root), "OUTPUT": str(tmp_path / "output"), "SHOTS": "4"}
    key = "TRAINER.DUALMIPROMPT."
    overrides = tiny_overrides(clip_file, epochs=3) + ["TRAIN.KEEP_CHECKPOINTS", "0", key + "W_ALIGN", "1.0",
                                                        key + "W_CONSIST", "1.0", key + "GPA_MEAN", "2.0",
                                                        key + "GPA_STD", "0.0"]
    run_script("base2new_train.sh", ["oxford_pets", 1, "DualMIPrompt"], overrides, env=env)
    folder = (tmp_path / "output/base2new/train_base/oxford_pets/shots_4/DualMIPrompt"
              / "vit_b16_c4_ep200_batch32_ctxv1/seed1")
    averages = epoch_averages(folder)
    diagnostics = ("loss_align", "loss_consist", "cos_soft_hand", "mi_ceiling_text", "mi_ceiling_vis",
                   "kappa_text_at_floor", "grad_ctx_ce", "grad_ctx_text_mi", "grad_ctx_vis_mi", "grad_ctx_align",
                   "grad_ctx_consist")
    for epoch in (1, 2, 3):
        assert set(diagnostics) <= set(averages[epoch])
        assert averages[epoch]["mi_ceiling_text"] == pytest.approx(math.log(3), abs=1e-3)
        assert averages[epoch]["grad_ctx_ce"] > 0 and averages[epoch]["grad_ctx_align"] > 0
    record = read_record(folder)
    assert record["training"]["first_epoch"]["epoch"] == 1 and record["training"]["last_epoch"]["epoch"] == 3
    assert set(diagnostics) <= set(record["training"]["last_epoch"])
    ckpt = {e: torch.load(folder / f"prompt_learner/model.pth.tar-{e}", weights_only=True) for e in (1, 2, 3)}
    ctx = {e: ckpt[e]["state_dict"]["prompt_learner.ctx"] for e in ckpt}
    assert torch.equal(ctx[3], ctx[2]) and not torch.equal(ctx[2], ctx[1])
    assert ckpt[3]["gpa"]["epochs"] == 3 and ckpt[1]["gpa"]["epochs"] == 1
