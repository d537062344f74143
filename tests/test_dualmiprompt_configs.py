"""DualMIPrompt's config files: valid options, and one ablation config per row of the ablation table
(docs/method.md), each naming the base config as ``_BASE_`` and holding only that row's change."""
import glob
import os

import pytest
import yaml
from fixtures import flat
from yacs.config import CfgNode as CN

from trainers.config import load_yaml_with_bases
from trainers.dualmiprompt_model import DualMIOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "configs/trainers/DualMIPrompt")
BASE = "vit_b16_c4_ep200_batch32_ctxv1.yaml"
KEY = "TRAINER.DUALMIPROMPT."

# Each ablation row and what it changes in the base config (the method's ablation table: CE only; + text MI;
# + visual augmentation; both; each estimator; each critic; each MIX_MODE; INFER_BETA in {0, 0.5}; then one row
# per option added to keep the dual-view term alive: template ensemble, alignment, consistency, GPA, fixed
# temperatures, temperature floor).
ABLATION = {
    "01_ce_only": {"W_TEXT_MI": 0.0, "W_VIS_MI": 0.0},
    "02_text_mi": {"W_VIS_MI": 0.0},
    "03_vis_aug": {"W_TEXT_MI": 0.0},
    "04_both": {},
    "05_estimator_jsd": {"ESTIMATOR": "jsd"},
    "06_estimator_dv": {"ESTIMATOR": "dv"},
    "07_critic_bilinear": {"CRITIC": "bilinear"},
    "08_critic_mlp": {"CRITIC": "mlp"},
    "09_mix_intra": {"MIX_MODE": "intra"},
    "10_infer_beta05": {"INFER_BETA": 0.5},
    "11_templates_ensemble": {"TEMPLATES": "ensemble"},
    "12_align": {"W_ALIGN": 8.0},
    "13_consist": {"W_CONSIST": 1.0},
    "14_gpa": {"GPA_MEAN": 160.0, "GPA_STD": 20.0},
    "15_fixed_kappa_text": {"LEARN_KAPPA": False},
    "16_fixed_kappa_vis": {"VIS_LEARN_KAPPA": False},
    "17_kappa_floor": {"KAPPA_FLOOR": 0.02},
}
# Options that are not the subject of an ablation row: the context and structure every row shares, the critic
# sizes and the temperatures' starting points (their defaults come from CoOp and CLIP, docs/method.md).
NOT_ABLATED = {"N_CTX", "CTX_INIT", "CSC", "CLASS_TOKEN_POSITION", "VIS_ESTIMATOR", "VIS_CRITIC", "KAPPA_INIT",
               "VIS_KAPPA_INIT", "VIS_KAPPA_FLOOR", "CRITIC_HIDDEN", "MIX_SPACE", "ALPHA"}


def load(path):
    return CN(load_yaml_with_bases(path))


def options_of(cfg):
    node = CN(DualMIOptions.defaults())
    node.PREC = "fp16"
    node.merge_from_other_cfg(cfg.TRAINER.DUALMIPROMPT)  # refuses unknown keys and wrong types
    return DualMIOptions.from_node(node)


def all_configs():
    return sorted(glob.glob(os.path.join(FOLDER, "*.yaml")) + glob.glob(os.path.join(FOLDER, "ablation", "*.yaml")))


@pytest.mark.parametrize("path", all_configs(), ids=os.path.basename)
def test_every_config_holds_valid_options(path):
    options = options_of(load(path))
    assert options.n_ctx == 4 and options.ctx_init == "a photo of a" and not options.csc


@pytest.mark.parametrize("path", all_configs(), ids=os.path.basename)
def test_every_config_takes_a_training_step(path, tiny_model_clip):
    """One step of each config's options on the tiny CLIP, logged as the trainer logs it (each extra as a float):
    an option that only its ablation row switches on must not fail at its first step."""
    import torch

    from trainers.dualmiprompt_model import DualMIPromptCLIP

    model = DualMIPromptCLIP(tiny_model_clip, ["cat", "dog", "fox", "owl"], ("a photo of a {}.", "itap of a {}."),
                             options_of(load(path)))
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loss, _, extra = model.training_loss(images, torch.tensor([0, 0, 1, 2, 3, 3]))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(torch.tensor(float(v))) for v in extra.values())
    assert model.prompt_learner.ctx.grad is not None


@pytest.fixture(scope="module")
def tiny_model_clip():
    from fixtures import tiny_clip

    return tiny_clip()


def test_ablation_rows_name_the_base_config_and_hold_only_their_change():
    base = flat(load(os.path.join(FOLDER, BASE)))
    files = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(FOLDER, "ablation", "*.yaml")))
    assert files == sorted(ABLATION)
    for name, change in ABLATION.items():
        path = os.path.join(FOLDER, "ablation", name + ".yaml")
        with open(path) as handle:
            own = yaml.safe_load(handle)
        assert own.pop("_BASE_") == "../" + BASE, name
        assert flat(CN(own)) == {KEY + key: value for key, value in change.items()}, name
        # resolved: the base with this row's keys
        assert flat(load(path)) == {**base, **{KEY + key: value for key, value in change.items()}}, name


def test_every_option_has_an_ablation_row():
    varied = set().union(*ABLATION.values())
    assert varied <= set(DualMIOptions.defaults())
    assert set(DualMIOptions.defaults()) - NOT_ABLATED - varied == set(), "options no ablation row varies"


def test_base_to_new_and_cross_dataset_configs():
    base = flat(load(os.path.join(FOLDER, BASE)))
    imagenet = flat(load(os.path.join(FOLDER, "vit_b16_c4_ep50_batch32_ctxv1.yaml")))
    xd = flat(load(os.path.join(FOLDER, "vit_b16_c4_ep50_batch32_ctxv1_cross_datasets.yaml")))
    # CoOp's base-to-new optimisation (KaiyangZhou/CoOp vit_b16_ctxv1 / vit_b16_ep50_ctxv1).
    for cfg, epochs in ((base, 200), (imagenet, 50), (xd, 50)):
        assert (cfg["OPTIM.NAME"], cfg["OPTIM.LR"], cfg["OPTIM.MAX_EPOCH"]) == ("sgd", 0.002, epochs)
        assert cfg["DATALOADER.TRAIN_X.BATCH_SIZE"] == 32 and cfg["MODEL.BACKBONE.NAME"] == "ViT-B/16"
        assert (cfg["OPTIM.WARMUP_EPOCH"], cfg["OPTIM.WARMUP_TYPE"], float(cfg["OPTIM.WARMUP_CONS_LR"])) == (
            1, "constant", 1e-5)
    assert {k: v for k, v in imagenet.items() if base[k] != v} == {"OPTIM.MAX_EPOCH": 50}
    assert {k: v for k, v in xd.items() if base[k] != v} == {"OPTIM.MAX_EPOCH": 50, KEY + "TEMPLATES": "ensemble"}


def test_the_defaults_of_the_base_config_are_the_documented_ones():
    assert options_of(load(os.path.join(FOLDER, BASE))) == DualMIOptions()


def test_the_method_page_documents_every_option_and_row():
    with open(os.path.join(ROOT, "docs", "method.md")) as handle:
        text = handle.read()
    for key in DualMIOptions.defaults():
        assert f"`{key}`" in text, key
    for name in ABLATION:
        assert name in text
