"""KgCoOp on the tiny CLIP: the loss against the official formulation (htyao89/KgCoOp, KgCoOp/trainers/kgcoop.py)
rewritten with CLIP's own modules, gradients, W = 0 as CoOp, the hand-crafted features, the registry and benchmark
case, the configs against the official ones, and one short run of the protocol scripts on the embedded world."""
import json
import os

import pytest
import torch
import torch.nn.functional as F
from fixtures import REPO, flat, run_script

from trainers import registry
from trainers.clip_loader import random_clip
from trainers.config import load_yaml_with_bases
from trainers.coop_model import CoOpCLIP
from trainers.encoders import tokenize
from trainers.kgcoop_model import TEMPLATE_OVERRIDES, KgCoOpCLIP, knowledge_template

BASE = ["abyssinian", "american_bulldog", "basset_hound", "beagle", "bengal"]
NEW = ["birman", "boxer", "chihuahua"]
TEMPLATE = "a photo of a {}, a type of pet."
LABELS = torch.tensor([0, 0, 1, 2, 3, 4])

# CUSTOM_TEMPLATES of the official KgCoOp/trainers/kgcoop.py: the hand-crafted prompt of each dataset.
OFFICIAL_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "a photo of a {}, a type of texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}

# KgCoOp/configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml, with the trainer keys its scripts/base2new_train.sh passes
# (N_CTX 4, CSC False, W 8.0, CLASS_TOKEN_POSITION end), "CTX_INIT: True" (which its code reads as "a photo of a")
# and its train.py's default precision (fp16).
OFFICIAL_CONFIG = {
    "DATALOADER.TRAIN_X.BATCH_SIZE": 128, "DATALOADER.TEST.BATCH_SIZE": 100, "DATALOADER.NUM_WORKERS": 8,
    "INPUT.SIZE": "(224, 224)", "INPUT.INTERPOLATION": "bicubic",
    "INPUT.PIXEL_MEAN": [0.48145466, 0.4578275, 0.40821073], "INPUT.PIXEL_STD": [0.26862954, 0.26130258, 0.27577711],
    "INPUT.TRANSFORMS": ["random_resized_crop", "random_flip", "normalize"],
    "OPTIM.NAME": "sgd", "OPTIM.LR": 0.002, "OPTIM.MAX_EPOCH": 100, "OPTIM.LR_SCHEDULER": "cosine",
    "OPTIM.WARMUP_EPOCH": 1, "OPTIM.WARMUP_TYPE": "constant", "OPTIM.WARMUP_CONS_LR": "1e-5",
    "TRAIN.PRINT_FREQ": 5, "MODEL.BACKBONE.NAME": "ViT-B/16",
    "TRAINER.KGCOOP.N_CTX": 4, "TRAINER.KGCOOP.CTX_INIT": "a photo of a", "TRAINER.KGCOOP.CSC": False,
    "TRAINER.KGCOOP.CLASS_TOKEN_POSITION": "end", "TRAINER.KGCOOP.PREC": "fp16", "TRAINER.KGCOOP.W": 8.0,
}
CONFIGS = os.path.join(REPO, "configs", "trainers")


@pytest.fixture(scope="module")
def clip_model():
    return random_clip("tiny")


def images(n=6, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def set_context(*models, seed=1):
    """The same context in every model: the initial words plus noise, so that the learned and the hand-crafted
    features differ from the start."""
    noise = torch.randn(models[0].prompt_learner.ctx.shape, generator=torch.Generator().manual_seed(seed)) * 0.05
    with torch.no_grad():
        for model in models:
            model.prompt_learner.ctx.add_(noise)


# ----- the official formulation, with CLIP's own modules -----
def official_text_features(clip_model, prompts, tokens):
    """The official TextEncoder: all 77 positions through CLIP's transformer, the EOT token's feature projected."""
    x = prompts + clip_model.positional_embedding
    x = clip_model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = clip_model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ clip_model.text_projection


def official_forward(clip_model, ctx, classnames, template, images):
    """``(logits, score)`` as the official CustomCLIP.forward: prompts ``[SOS] ctx name . [EOS]`` (the embeddings of
    "a photo of a name." with the context tokens replaced), hand-crafted features from ``encode_text`` of the
    filled template, normalised, and ``score = 1 - mean(CosineSimilarity(dim=1, eps=1e-7)(learned, hand))``."""
    names = [name.replace("_", " ") for name in classnames]
    n_ctx = ctx.shape[0]
    tokens = tokenize([f"a photo of a {name}." for name in names])
    embedded = clip_model.token_embedding(tokens)
    prompts = torch.cat([embedded[:, :1], ctx.unsqueeze(0).expand(len(names), -1, -1), embedded[:, 1 + n_ctx:]], 1)
    text = official_text_features(clip_model, prompts, tokens)
    with torch.no_grad():
        hand = clip_model.encode_text(tokenize([template.format(name) for name in names]))
        hand = hand / hand.norm(dim=-1, keepdim=True)
    image = clip_model.encode_image(images)
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    logits = clip_model.logit_scale.exp() * image @ text.t()
    score = 1.0 - torch.mean(torch.nn.CosineSimilarity(dim=1, eps=1e-07)(text, hand))
    return logits, score


@pytest.mark.parametrize("w", [8.0, 2.5])
def test_loss_logits_and_gradient_equal_the_official_formulation(clip_model, w):
    model = KgCoOpCLIP(clip_model, BASE, TEMPLATE, w=w)
    set_context(model)
    x = images()
    loss, logits, extra = model.training_loss(x, LABELS)
    loss.backward()

    ctx = model.prompt_learner.ctx.detach().clone().requires_grad_(True)
    expected_logits, score = official_forward(clip_model, ctx, BASE, TEMPLATE, x)
    expected_loss = F.cross_entropy(expected_logits, LABELS) + w * score
    expected_loss.backward()

    assert 0.05 < score.item() < 1.0  # the two views differ: the term is not trivially 0
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(extra["loss_kg"], score.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(extra["loss_ce"], F.cross_entropy(expected_logits, LABELS).detach(), rtol=1e-5,
                               atol=1e-5)
    assert set(extra) == {"loss_ce", "loss_kg"} and all(v.dim() == 0 for v in extra.values())
    torch.testing.assert_close(model.prompt_learner.ctx.grad, ctx.grad, rtol=1e-4, atol=1e-5)


def test_gradients_reach_only_the_context_and_nothing_class_dependent_is_saved(clip_model):
    model = KgCoOpCLIP(clip_model, BASE, TEMPLATE)
    set_context(model)
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]
    model.train()
    assert not model.clip.training
    loss, _, _ = model.training_loss(images(), LABELS)
    loss.backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert model.prompt_learner.ctx.grad.abs().sum() > 0
    hand = model.hand_crafted_features()
    assert not hand.requires_grad and hand.grad_fn is None
    # The knowledge term alone moves the context.
    soft = model.class_weights()
    (grad,) = torch.autograd.grad(model.w * (1 - (soft * hand).sum(-1)).mean(), model.prompt_learner.ctx)
    assert grad.abs().sum() > 0
    # State: the frozen CLIP (also reached through the text encoder's modules) and the context; no prompt buffer, no
    # hand-crafted feature. Checkpoints keep the learned parameters only.
    state = set(model.state_dict())
    assert {key for key in state if not key.startswith(("clip.", "text_encoder."))} == {"prompt_learner.ctx"}


def test_w_zero_is_coop_exactly(clip_model):
    coop = CoOpCLIP(clip_model, BASE, n_ctx=4, ctx_init="a photo of a")
    kg = KgCoOpCLIP(clip_model, BASE, TEMPLATE, w=0.0)
    set_context(coop, kg)
    x = images()
    coop_loss, coop_logits, _ = coop.training_loss(x, LABELS)
    kg_loss, kg_logits, extra = kg.training_loss(x, LABELS)
    assert torch.equal(kg_logits, coop_logits) and torch.equal(kg_loss, coop_loss)
    coop_loss.backward()
    kg_loss.backward()
    assert torch.equal(kg.prompt_learner.ctx.grad, coop.prompt_learner.ctx.grad)
    assert float(extra["loss_kg"]) > 0  # still logged
    with torch.no_grad():
        assert torch.equal(kg.evaluation_weights(), coop.evaluation_weights())
        assert torch.equal(kg.predict(x, kg.evaluation_weights()), coop.predict(x, coop.evaluation_weights()))


def test_a_larger_w_pulls_the_context_towards_the_hand_crafted_features(clip_model):
    distances = {}
    for w in (0.0, 8.0):
        model = KgCoOpCLIP(clip_model, BASE, TEMPLATE, w=w)
        set_context(model, seed=2)
        optimizer = torch.optim.SGD([model.prompt_learner.ctx], lr=0.5)
        for step in range(5):
            optimizer.zero_grad()
            loss, _, _ = model.training_loss(images(seed=step), LABELS)
            loss.backward()
            optimizer.step()
        distances[w] = float(model.training_loss(images(), LABELS)[2]["loss_kg"])
    assert distances[8.0] < distances[0.0]


def test_hand_crafted_features_are_the_frozen_encoder_s_features_of_the_template_computed_once(clip_model):
    model = KgCoOpCLIP(clip_model, BASE, TEMPLATE)
    calls = []
    model.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    for step in range(3):
        model.training_loss(images(seed=step), LABELS)
    assert len(calls) == 1 + 3 and model.cache.computed == 1  # the template once, then the prompts once a step
    with torch.no_grad():
        expected = F.normalize(clip_model.encode_text(tokenize([TEMPLATE.format(n.replace("_", " ")) for n in BASE])),
                               dim=-1)
    torch.testing.assert_close(model.hand_crafted_features(), expected, rtol=1e-5, atol=1e-5)
    assert model.cache.computed == 1
    # A model for other classes (base-to-new evaluation) computes its own, for those classes.
    other = KgCoOpCLIP(clip_model, NEW, TEMPLATE)
    with torch.no_grad():
        expected_new = F.normalize(clip_model.encode_text(tokenize([TEMPLATE.format(n) for n in NEW])), dim=-1)
    torch.testing.assert_close(other.hand_crafted_features(), expected_new, rtol=1e-5, atol=1e-5)
    # With the template "a photo of a {}." the initial context "a photo of a" gives the hand-crafted prompts
    # themselves: the knowledge term starts at 0.
    plain = KgCoOpCLIP(clip_model, BASE, "a photo of a {}.")
    assert abs(plain.training_loss(images(), LABELS)[2]["loss_kg"].item()) < 1e-6


def test_a_context_learned_on_base_classes_evaluates_on_new_ones(clip_model):
    trained = KgCoOpCLIP(clip_model, BASE, TEMPLATE)
    set_context(trained)
    optimizer = torch.optim.SGD([trained.prompt_learner.ctx], lr=0.5)
    loss, _, _ = trained.training_loss(images(), LABELS)
    loss.backward()
    optimizer.step()
    checkpoint = {"prompt_learner.ctx": trained.prompt_learner.ctx.detach().clone()}
    evaluated = KgCoOpCLIP(clip_model, NEW, TEMPLATE)
    missing, unexpected = evaluated.load_state_dict(checkpoint, strict=False)
    assert not unexpected and "prompt_learner.ctx" not in missing
    coop = CoOpCLIP(clip_model, NEW, n_ctx=4, ctx_init="a photo of a")
    coop.load_state_dict(checkpoint, strict=False)
    with torch.no_grad():
        x = images()
        torch.testing.assert_close(evaluated.predict(x, evaluated.evaluation_weights()), coop(x))


def test_invalid_options_are_refused(clip_model):
    with pytest.raises(ValueError, match="W must be >= 0"):
        KgCoOpCLIP(clip_model, BASE, TEMPLATE, w=-1.0)
    with pytest.raises(ValueError, match="must hold"):
        KgCoOpCLIP(clip_model, BASE, "a photo of a thing.")


def test_the_template_of_each_dataset_is_the_official_one():
    """The official table: each dataset's own template here, except DTD's."""
    pytest.importorskip("dassl")  # the dataset classes register with Dassl
    from dassl.data.datasets import DATASET_REGISTRY

    for name, official in OFFICIAL_TEMPLATES.items():
        assert knowledge_template(name, DATASET_REGISTRY.get(name).template) == official, name
    assert set(TEMPLATE_OVERRIDES) == {"DescribableTextures"}
    assert knowledge_template("World", "a {} in the world.") == "a {} in the world."


# ----- registry, benchmark, configs -----
def test_declared_between_coop_and_cocoop_with_a_benchmark_case():
    import benchmark

    spec = registry.get("KgCoOp")
    names = registry.names()
    assert names.index("CoOp") < names.index("KgCoOp") < names.index("CoCoOp")
    assert (spec.adapter, spec.learns, spec.world_config, spec.in_suite) == ("trainers.kgcoop", True, "world", True)
    for protocol in registry.PROTOCOLS:
        for dataset in ("imagenet", "dtd"):
            assert spec.config_name(protocol, dataset, 16) == "vit_b16_ep100_ctxv1"
            assert os.path.isfile(os.path.join(REPO, spec.config_path(spec.config_name(protocol, dataset))))
    assert spec.config_name("base2new", "world_shapes") == "world"
    assert "KgCoOp" in benchmark.benchmark_trainers()

    clip_model = random_clip("tiny")
    x, labels = images(4), torch.tensor([0, 3, 7, 9])
    results = {}
    for mode in benchmark.MODES:
        torch.manual_seed(0)
        model = benchmark.build_case("KgCoOp", clip_model, 10, mode, torch.device("cpu"))
        assert isinstance(model, KgCoOpCLIP) and model.w == 8.0 and model.prompt_learner.n_ctx == 4
        loss, logits, _ = model.training_loss(x, labels)
        loss.backward()
        results[mode] = (loss.detach(), logits.detach(), model.prompt_learner.ctx.grad)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 4 * clip_model.ln_final.weight.shape[0]
    # The reference computation (77 positions, CLIP's own blocks) gives the same loss and gradient.
    torch.testing.assert_close(results["ours"][0], results["reference"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["ours"][1], results["reference"][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["ours"][2], results["reference"][2], rtol=1e-3, atol=1e-5)


def test_the_config_carries_the_official_values():
    ours = flat(load_yaml_with_bases(os.path.join(CONFIGS, "KgCoOp", "vit_b16_ep100_ctxv1.yaml")))
    assert ours == OFFICIAL_CONFIG


def test_the_world_config_is_coop_s_with_the_knowledge_term():
    ours = flat(load_yaml_with_bases(os.path.join(CONFIGS, "KgCoOp", "world.yaml")))
    coop = flat(load_yaml_with_bases(os.path.join(CONFIGS, "CoOp", "world.yaml")))
    trainer = {key: value for key, value in ours.items() if key.startswith("TRAINER.")}
    assert {key: value for key, value in ours.items() if key not in trainer} == {
        key: value for key, value in coop.items() if not key.startswith("TRAINER.")}
    assert trainer == {"TRAINER.KGCOOP.N_CTX": 4, "TRAINER.KGCOOP.CTX_INIT": "a photo of a",
                       "TRAINER.KGCOOP.CSC": False, "TRAINER.KGCOOP.PREC": "fp32", "TRAINER.KGCOOP.W": 8.0}
    assert {key.replace("COOP.", "KGCOOP."): value for key, value in coop.items() if key.startswith("TRAINER.")} == {
        key: value for key, value in trainer.items() if not key.endswith((".CSC", ".W"))}


def test_the_configs_merge_into_the_trainer_node():
    pytest.importorskip("dassl")
    from trainers.config import get_cfg_default, merge_file

    cfg = get_cfg_default()
    node = cfg.TRAINER.KGCOOP
    defaults = {key: node[key] for key in node}
    assert defaults == {"N_CTX": 4, "CTX_INIT": "a photo of a", "CSC": False, "CLASS_TOKEN_POSITION": "end",
                        "PREC": "fp16", "W": 8.0}  # the official scripts' values
    merge_file(cfg, os.path.join(CONFIGS, "KgCoOp", "vit_b16_ep100_ctxv1.yaml"))
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.DATALOADER.TRAIN_X.BATCH_SIZE) == (0.002, 100, 128)
    assert (cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_TYPE, cfg.OPTIM.WARMUP_CONS_LR) == (1, "constant", 1e-5)
    assert {key: cfg.TRAINER.KGCOOP[key] for key in node} == defaults
    world = get_cfg_default()
    merge_file(world, os.path.join(CONFIGS, "KgCoOp", "world.yaml"))
    assert (world.TRAINER.KGCOOP.W, world.TRAINER.KGCOOP.PREC, world.OPTIM.LR) == (8.0, "fp32", 0.01)


# ----- one short run of the protocol scripts -----
@pytest.mark.integration
def test_base_to_new_on_the_world(tmp_path, world_env):
    env = {"DATA": world_env["DATA"], "OUTPUT": str(tmp_path / "output"), "SHOTS": "2"}  # the session's world
    quick = ["OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"]
    run_script("base2new_train.sh", ["world", 1, "KgCoOp"], quick, env=env)
    run_script("base2new_test.sh", ["world", 1, "KgCoOp"], quick, env=env)
    common = "world/shots_2/KgCoOp/world/seed1"
    records = {}
    for step in ("train_base", "test_new"):
        with open(os.path.join(env["OUTPUT"], "base2new", step, common, "results.json")) as handle:
            records[step] = json.load(handle)
    base, new = records["train_base"], records["test_new"]
    assert (base["trainer"], base["config"], base["subsample"], base["epoch"]) == ("KgCoOp", "world", "base", 1)
    assert (new["subsample"], new["eval_only"], new["epoch"]) == ("new", True, 1)
    logged = base["training"]["last_epoch"]
    # The world's template is "a photo of a {}.", the words the context starts from: the pull starts at 0 and
    # one epoch moves the learned features only a little away from the hand-crafted ones.
    assert 0 <= logged["loss_kg"] < 0.05
    assert logged["loss"] == pytest.approx(logged["loss_ce"] + 8.0 * logged["loss_kg"], abs=1e-5)
