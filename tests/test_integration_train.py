"""train.py end to end with real Dassl and the tiny CLIP: training, zero-shot evaluation checked against an
independent computation, resume, loading on other classes, and the errors a user can run into."""
import json
import re
import shutil

import pytest
import torch
import torch.nn.functional as F
from fixtures import PET_CLASSES, pets_setup, run_train, tiny_clip, tiny_overrides

pytestmark = pytest.mark.integration

DATASET_YAML = "configs/datasets/oxford_pets.yaml"


def train_args(root, out, trainer="CoOp", config="configs/trainers/CoOp/vit_b16_ctxv1.yaml"):
    return ["--root", root, "--seed", 1, "--trainer", trainer, "--dataset-config-file", DATASET_YAML,
            "--config-file", config, "--output-dir", out]


def record(folder):
    return json.loads((folder / "results.json").read_text())


def test_zero_shot_accuracy_equals_an_independent_computation(tmp_path):
    root, clip_file = pets_setup(tmp_path)
    out = tmp_path / "zs"
    run_train(train_args(root, out, "ZeroshotCLIP", "configs/trainers/ZeroshotCLIP/vit_b16.yaml")
              + ["--eval-only", *tiny_overrides(clip_file)])
    result = record(out)

    # The same evaluation by hand: CLIP's own encoders, the pet template, Dassl's test transform.
    from dassl.data.transforms import build_transform
    from PIL import Image

    from trainers.config import get_cfg_default
    from trainers.encoders import tokenize

    cfg = get_cfg_default()
    cfg.merge_from_file("configs/trainers/ZeroshotCLIP/vit_b16.yaml")
    cfg.INPUT.SIZE = (32, 32)
    transform = build_transform(cfg, is_train=False)
    split = json.loads((root / "oxford_pets" / "split_zhou_OxfordPets.json").read_text())
    model = tiny_clip()
    with torch.no_grad():
        names = [c.replace("_", " ") for c in PET_CLASSES]
        text = F.normalize(model.encode_text(tokenize([f"a photo of a {n}, a type of pet." for n in names])), dim=-1)
        images = torch.stack([transform(Image.open(root / "oxford_pets/images" / p).convert("RGB"))
                              for p, _, _ in split["test"]])
        predicted = (F.normalize(model.encode_image(images), dim=-1) @ text.t()).argmax(1)
    labels = torch.tensor([y for _, y, _ in split["test"]])
    assert result["num_images"] == len(labels) == 24
    assert result["accuracy"] == pytest.approx(100.0 * (predicted == labels).float().mean().item())


def test_coop_trains_resumes_and_keeps_its_schedule(tmp_path):
    root, clip_file = pets_setup(tmp_path)
    full = tmp_path / "full"
    args = train_args(root, full) + tiny_overrides(clip_file, epochs=4) + ["TRAIN.CHECKPOINT_FREQ", "1",
                                                                           "TRAIN.KEEP_CHECKPOINTS", "0"]
    run_train(args)
    checkpoint = torch.load(full / "prompt_learner/model.pth.tar-4", weights_only=True)
    assert set(checkpoint["state_dict"]) == {"prompt_learner.ctx"}  # learned parameters only
    initial = tiny_clip().token_embedding(torch.tensor([[320, 1125, 539, 320]]))[0]  # "a photo of a"
    assert not torch.allclose(checkpoint["state_dict"]["prompt_learner.ctx"], initial)  # it learned
    assert record(full)["epoch"] == 4 and record(full)["eval_only"] is False

    # Stop after epoch 2: keep only what a run killed during epoch 3 would have left, then run the same command.
    stopped = tmp_path / "stopped"
    shutil.copytree(full, stopped)
    for path in [*stopped.glob("prompt_learner/model.pth.tar-[34]"), stopped / "results.json", *stopped.glob("log.txt*")]:
        path.unlink()
    (stopped / "prompt_learner/checkpoint").write_text("model.pth.tar-2\n")
    run_train([a if a != full else stopped for a in args])
    log = "".join(p.read_text() for p in stopped.glob("log.txt*"))
    assert "Resumed from" in log and "(epoch 2)" in log
    assert "epoch [1/4]" not in log and "epoch [3/4]" in log and "epoch [4/4]" in log
    lr_of = lambda text, e: re.findall(rf"epoch \[{e}/4\].* lr ([\d.e+-]+)", text)  # noqa: E731
    full_log = "".join(p.read_text() for p in full.glob("log.txt*"))
    for epoch in (3, 4):
        assert set(lr_of(log, epoch)) == set(lr_of(full_log, epoch)) and lr_of(log, epoch)
    assert record(stopped)["epoch"] == 4


def test_class_specific_context_explains_why_it_cannot_move_to_new_classes(tmp_path):
    root, clip_file = pets_setup(tmp_path)
    trained = tmp_path / "csc"
    common = ["TRAINER.COOP.CSC", "True", "TRAINER.COOP.CTX_INIT", "", "TRAINER.COOP.N_CTX", "4",
              "DATASET.NUM_SHOTS", "2"]
    run_train(train_args(root, trained) + tiny_overrides(clip_file, epochs=1) + common
              + ["DATASET.SUBSAMPLE_CLASSES", "base"])
    result = run_train(train_args(root, tmp_path / "new") + ["--eval-only", "--model-dir", trained]
                       + tiny_overrides(clip_file) + common + ["DATASET.SUBSAMPLE_CLASSES", "all"], check=False)
    assert result.returncode == 2
    assert "class-specific (CSC True) and was learned for 3 classes, but this dataset has 6" in result.stderr


def test_user_errors_end_with_a_message_not_a_traceback(tmp_path):
    root, clip_file = pets_setup(tmp_path)
    cases = {
        "does not exist. Set DATA": train_args(tmp_path / "no_data", tmp_path / "o1") + tiny_overrides(clip_file),
        "No checkpoint in": train_args(root, tmp_path / "o2") + ["--eval-only", "--model-dir", tmp_path / "empty"]
        + tiny_overrides(clip_file),
    }
    cases["Unknown config key OPTIM.LRR (override OPTIM.LRR 0.1). Did you mean OPTIM.LR"] = \
        train_args(root, tmp_path / "o4") + ["OPTIM.LRR", "0.1"]
    cases["Unknown trainer 'coop'. Did you mean CoOp"] = train_args(root, tmp_path / "o5", trainer="coop")
    (tmp_path / "empty").mkdir()
    nan_clip = tiny_clip()
    with torch.no_grad():
        nan_clip.logit_scale.fill_(float("nan"))
    torch.save(nan_clip.state_dict(), tmp_path / "nan.pt")
    cases["The loss is nan at epoch 1/2, batch 1/"] = train_args(root, tmp_path / "o3") + tiny_overrides(tmp_path / "nan.pt")
    for expected, args in cases.items():
        result = run_train(args, check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and expected in result.stderr


@pytest.mark.parametrize("trainer, config", [("KgCoOp", "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml"),
                                             ("IVLP", "configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml"),
                                             ("PromptSRC", "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml")])
def test_the_new_baselines_resume_to_the_uninterrupted_result(tmp_path, trainer, config):
    """Train 3 epochs; then keep what a run killed during epoch 3 leaves and run the same command: the record (and,
    for PromptSRC, the Gaussian average over the epochs) equals the uninterrupted run's."""
    root, clip_file = pets_setup(tmp_path)
    full = tmp_path / "full"
    depth = [f"TRAINER.{trainer.upper()}.PROMPT_DEPTH_TEXT", "2", f"TRAINER.{trainer.upper()}.PROMPT_DEPTH_VISION",
             "2"] if trainer != "KgCoOp" else []
    gpa = ["TRAINER.PROMPTSRC.GPA_MEAN", "2.0", "TRAINER.PROMPTSRC.GPA_STD", "1.0"] if trainer == "PromptSRC" else []
    args = train_args(root, full, trainer, config) + tiny_overrides(clip_file, epochs=3) + [
        "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.KEEP_CHECKPOINTS", "0", *depth, *gpa]
    run_train(args)
    stopped = tmp_path / "stopped"
    shutil.copytree(full, stopped)
    for path in [stopped / "prompt_learner/model.pth.tar-3", stopped / "results.json", *stopped.glob("log.txt*")]:
        path.unlink()
    (stopped / "prompt_learner/checkpoint").write_text("model.pth.tar-2\n")
    run_train([a if a != full else stopped for a in args])
    assert "Resumed from" in "".join(p.read_text() for p in stopped.glob("log.txt*"))
    volatile = {"train_time_s", "eval_time_s", "created", "output_dir", "model_dir", "training"}
    resumed, uninterrupted = record(stopped), record(full)
    assert {k: v for k, v in resumed.items() if k not in volatile} == {
        k: v for k, v in uninterrupted.items() if k not in volatile}
    assert resumed["trainer"] == trainer and resumed["epoch"] == 3


@pytest.mark.parametrize("trainer, config", [("CoOp", "configs/trainers/CoOp/vit_b16_ctxv1.yaml"),
                                             ("DualMIPrompt", "configs/trainers/DualMIPrompt/vit_b16_c4_ep50_batch32_ctxv1.yaml")])
def test_cached_image_features_train_the_same_context_as_encoding_every_image(tmp_path, trainer, config):
    root, clip_file = pets_setup(tmp_path)
    flips = ["INPUT.TRANSFORMS", "['random_flip', 'normalize']"]  # the world configs' only augmentation
    runs = {}
    for cached in (False, True):
        out = tmp_path / f"cached_{cached}"
        run_train(train_args(root, out, trainer, config) + tiny_overrides(clip_file, epochs=3) + flips
                  + ["MODEL.CACHE_IMAGE_FEATURES", str(cached)])
        runs[cached] = out
    learned = {c: torch.load(runs[c] / "prompt_learner/model.pth.tar-3", weights_only=True)["state_dict"]
               for c in runs}
    for name, value in learned[False].items():
        torch.testing.assert_close(learned[True][name], value, rtol=1e-4, atol=1e-5)
    assert record(runs[True])["accuracy"] == pytest.approx(record(runs[False])["accuracy"], abs=1e-9)
    log = "".join(p.read_text() for p in runs[True].glob("log.txt*"))
    encoded, reused = map(int, re.search(r"Image feature cache: (\d+) distinct images encoded, (\d+) encodings "
                                         r"reused", log).groups())
    train_images = 6 * len(PET_CLASSES)  # pets_setup: 6 training images per class, each seen as is or mirrored
    assert encoded <= 2 * train_images and reused >= 3 * train_images - encoded
    assert "Image feature cache" not in "".join(p.read_text() for p in runs[False].glob("log.txt*"))


def test_settings_the_model_refuses_end_in_one_line(tmp_path):
    root, clip_file = pets_setup(tmp_path)
    ivlp = train_args(root, tmp_path / "ivlp", "IVLP", "configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml")
    depth = ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "2", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "2"]
    cases = [(["MODEL.CACHE_IMAGE_FEATURES", "True", *depth], "error: MODEL.CACHE_IMAGE_FEATURES: IVLP prompts CLIP's "
              "image encoder"),  # its image features change as it learns
             ([], "error: PROMPT_DEPTH_TEXT must be between 1 (the context at the input only) and 2")]  # 9 officially
    for extra, expected in cases:
        result = run_train(ivlp + tiny_overrides(clip_file) + extra, check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1].startswith(expected), result.stderr[-2000:]
        assert "Traceback" not in result.stderr
