"""What a shared or unlucky run folder meets, run as a user runs train.py: a run folder reached through a link,
a refused run that must write nothing, checkpoints that do not fit the trainer loading them, a resume with another
schedule, a read-only data folder, and a broken link where the world is generated."""
import os
import shutil
import sys

import pytest
import torch
from fixtures import can_mount_read_only, pets_setup, read_only, run_command, run_train, tiny_overrides

from common import runlock

pytestmark = pytest.mark.integration

PETS = ["--dataset-config-file", "configs/datasets/oxford_pets.yaml"]
COOP = ["--trainer", "CoOp", "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml"]
COCOOP = ["--trainer", "CoCoOp", "--config-file", "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"]


def train(root, clip_file, out, trainer=COOP, epochs=1, flags=(), **kwargs):
    return run_train([*trainer, "--root", root, "--seed", 1, *PETS, "--output-dir", out, *flags,
                      *tiny_overrides(clip_file, epochs=epochs)], **kwargs)


def error_line(result):
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[-1] if lines else ""


def test_a_run_folder_reached_through_a_link_has_the_lock_of_the_folder(tmp_path):
    root, clip_file = pets_setup(tmp_path)
    (tmp_path / "out" / "run").mkdir(parents=True)
    os.symlink(tmp_path / "out" / "run", tmp_path / "out" / "run_link")
    held = runlock.acquire(str(tmp_path / "out" / "run"))  # a run training into out/run
    try:
        result = train(root, clip_file, tmp_path / "out" / "run_link", check=False)
    finally:
        held.close()
    assert result.returncode == runlock.LOCKED_EXIT_STATUS, result.stderr[-2000:]
    assert "is being written by process" in error_line(result)
    assert os.listdir(tmp_path / "out" / "run") == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch CoOp run: ``(root, clip_file, run folder)``; tests copy the folder before changing it."""
    tmp_path = tmp_path_factory.mktemp("trained")
    root, clip_file = pets_setup(tmp_path)
    train(root, clip_file, tmp_path / "run")
    return root, clip_file, tmp_path / "run"


def copy_run(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained[2], out)
    return out


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith("log.txt") and "tensorboard" not in p.parts}


def test_a_run_refused_by_the_folder_it_would_resume_has_written_nothing(trained, tmp_path):
    root, clip_file, _ = trained
    out = copy_run(trained, tmp_path)
    before = snapshot(out)
    result = train(root, clip_file, out, trainer=COCOOP, check=False)
    assert result.returncode == 2 and "was written by CoOp, not CoCoOp" in error_line(result)
    assert snapshot(out) == before  # config.yaml is CoOp's still, and no config-1.yaml beside it


def test_a_resume_with_another_max_epoch_is_refused_saying_how_to_start_over(trained, tmp_path):
    root, clip_file, _ = trained
    out = copy_run(trained, tmp_path)
    before = snapshot(out)
    result = train(root, clip_file, out, epochs=2, check=False)
    line = error_line(result)
    assert result.returncode == 2
    assert "trained with OPTIM.MAX_EPOCH 1, and this command asks for 2" in line
    assert "Run with OPTIM.MAX_EPOCH 1 to finish that run, or start over in another --output-dir" in line
    assert snapshot(out) == before
    assert train(root, clip_file, tmp_path / "fresh", epochs=2).returncode == 0  # starting over works


def crafted(trained, tmp_path, change):
    """A copy of the trained run whose checkpoint is changed by ``change(checkpoint)``."""
    out = copy_run(trained, tmp_path)
    path = out / "prompt_learner" / "model.pth.tar-1"
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)
    return out


def evaluate(trained, model_dir, out):
    root, clip_file, _ = trained
    return train(root, clip_file, out, flags=["--eval-only", "--model-dir", model_dir], check=False)


def test_an_old_checkpoint_of_another_trainer_is_refused_by_its_parameter_names(trained, tmp_path):
    def old_cocoop(checkpoint):  # written before the trainer field: only its entries tell who wrote it
        del checkpoint["trainer"]
        checkpoint["state_dict"]["prompt_learner.meta_net.linear1.weight"] = torch.zeros(2, 32)

    result = evaluate(trained, crafted(trained, tmp_path, old_cocoop), tmp_path / "eval")
    assert result.returncode == 2
    assert "holds prompt_learner.meta_net.linear1.weight, which CoOp does not have" in error_line(result)
    assert not (tmp_path / "eval" / "results.json").exists()


def test_an_integer_context_is_refused(trained, tmp_path):
    def integer_ctx(checkpoint):
        checkpoint["state_dict"]["prompt_learner.ctx"] = checkpoint["state_dict"]["prompt_learner.ctx"].long()

    result = evaluate(trained, crafted(trained, tmp_path, integer_ctx), tmp_path / "eval")
    assert result.returncode == 2
    assert "prompt_learner.ctx is a tensor of int64, not of floating-point numbers" in error_line(result)
    assert not (tmp_path / "eval" / "results.json").exists()


def test_a_checkpoint_beyond_its_run_s_epochs_is_refused_for_resume_and_evaluation(trained, tmp_path):
    def far_epoch(checkpoint):
        checkpoint["epoch"] = 10**6

    root, clip_file, _ = trained
    out = crafted(trained, tmp_path, far_epoch)
    before = snapshot(out)
    resumed = train(root, clip_file, out, check=False)
    assert resumed.returncode == 2 and "its epoch is 1000000, beyond the 1 epochs" in error_line(resumed)
    assert snapshot(out) == before  # no new record
    evaluated = evaluate(trained, out, tmp_path / "eval")
    assert evaluated.returncode == 2 and "its epoch is 1000000" in error_line(evaluated)
    assert not (tmp_path / "eval" / "results.json").exists()


def test_a_read_only_data_folder_with_everything_there_trains(tmp_path):
    if not can_mount_read_only(tmp_path):
        pytest.skip("no user namespaces here to mount a folder read-only")
    root, clip_file = pets_setup(tmp_path)
    command = [sys.executable, "train.py", *COOP, "--root", root, "--seed", 1, *PETS, "--output-dir", tmp_path / "out",
               *tiny_overrides(clip_file, epochs=1), "DATASET.NUM_SHOTS", "2"]
    result = run_command(read_only(root, command), check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Few-shot data not cached" in result.stdout and "read-only" in result.stdout
    assert (tmp_path / "out" / "results.json").exists()
    assert not (root / "oxford_pets" / "split_fewshot").exists()


def test_a_read_only_data_folder_without_the_world_says_where_it_must_write(tmp_path):
    if not can_mount_read_only(tmp_path):
        pytest.skip("no user namespaces here to mount a folder read-only")
    data = tmp_path / "data"
    data.mkdir()
    command = [sys.executable, "train.py", "--trainer", "CoOp", "--config-file", "configs/trainers/CoOp/world.yaml",
               "--dataset-config-file", "configs/datasets/world.yaml", "--root", data, "--output-dir", tmp_path / "o",
               "--seed", 1]
    result = run_command(read_only(data, command), check=False)
    assert result.returncode == 2
    line = error_line(result)
    assert f"Cannot generate the embedded dataset world in {data}: Read-only file system" in line
    assert "give a DATA (--root) you can write to" in line
    assert os.listdir(data) == []


@pytest.mark.parametrize("link", ["dangling", "loop"])
def test_a_broken_link_at_the_world_folder_is_one_line_before_anything_is_generated(tmp_path, link):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(data / ("nowhere" if link == "dangling" else "world"), data / "world")
    result = run_train(["--trainer", "CoOp", "--config-file", "configs/trainers/CoOp/world.yaml",
                        "--dataset-config-file", "configs/datasets/world.yaml", "--root", data,
                        "--output-dir", tmp_path / "o", "--seed", 1], check=False)
    assert result.returncode == 2
    assert f"{data / 'world'} is a symbolic link to" in error_line(result)
    assert "does not exist or leads back to itself" in error_line(result)
    assert sorted(os.listdir(data)) == ["world"] and "Generating" not in result.stdout
