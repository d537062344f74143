"""Checkpoints without Dassl: random states, weights-only loading, atomic writes, corrupt files, the pointer file,
resume errors and how many checkpoints a run keeps. ``CheckpointMethods`` runs here on a stand-in trainer with the
attributes ``PromptTrainer`` gives it (a config, a model, an optimiser and a schedule).

Each test says in a comment which bug it catches; each was checked to fail with that bug put in by hand."""
import os
import random
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch
from yacs.config import CfgNode as CN

from common.fileio import atomic_open, atomic_torch_save
from trainers import checkpoints
from trainers.checkpoints import (
    BEST_CHECKPOINT,
    CHECKPOINT_PREFIX,
    POINTER,
    CheckpointError,
    CheckpointMethods,
    CheckpointWarning,
    CorruptCheckpoint,
    load_checkpoint_file,
    random_states,
    restore_random_states,
    resume_candidates,
    save_checkpoint,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----- random states -----
def draws():
    """A few draws from each generator a run uses, the Gaussian ones included (both Python and NumPy cache a
    second Gaussian value in their state)."""
    return {"python": [random.random(), random.gauss(0, 1), random.randrange(10**9)],
            "numpy": np.concatenate([np.random.rand(3), np.random.normal(size=1)]).tolist(),
            "torch": torch.rand(3).tolist() + torch.randn(1).tolist()}


def test_restoring_random_states_restores_python_numpy_and_torch(tmp_path):
    # Catches: restore_random_states (or random_states) forgetting Python's or NumPy's state (or torch's), or
    # losing part of one (NumPy's position or cached Gaussian) on the way through a weights-only checkpoint file.
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1), np.random.normal(), torch.randn(1)  # leave a cached Gaussian in each state
    path = tmp_path / "states.pth"
    atomic_torch_save({"state_dict": {}, "random_states": random_states()}, str(path))
    after_save = draws()

    random.seed(99)  # the generators move on, as they would in the rest of a killed run
    np.random.seed(99)
    torch.manual_seed(99)
    draws()
    restore_random_states(load_checkpoint_file(str(path))["random_states"])
    after_restore = draws()
    for generator in ("python", "numpy", "torch"):
        assert after_restore[generator] == after_save[generator], f"{generator}'s random state was not restored"


# ----- weights-only loading -----
class RunsCode:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def crafted_checkpoint(path, marker):
    torch.save({"state_dict": {"ctx": torch.zeros(2, 4)}, "epoch": 1, "payload": RunsCode(str(marker))}, str(path))


def test_a_checkpoint_crafted_to_run_code_is_refused_and_does_not_run(tmp_path):
    # Catches: loading that stops being weights-only (torch.load(..., weights_only=False) or a plain unpickler):
    # the payload would run and create the marker, and no error would be raised. The file is a real torch archive
    # (torch.save), so it is refused by the weights-only unpickler, not by the zip check.
    path, marker = tmp_path / "model.pth.tar-1", tmp_path / "pwned"
    crafted_checkpoint(path, marker)
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match="could run code") as refused:
        load_checkpoint_file(str(path))
    assert not isinstance(refused.value, CorruptCheckpoint)  # refused as unsafe, not called corrupt
    assert "exec" in str(refused.value)
    assert not marker.exists()

    # The payload is live: an unsafe load runs it. So the refusal above is what kept it from running.
    torch.load(str(path), weights_only=False)
    assert marker.exists()


# ----- atomic writes (common/fileio.py) -----
def test_atomic_open_keeps_the_old_file_when_the_writer_raises(tmp_path):
    # Catches: atomic_open writing into the file itself, or renaming the temporary over it even on an error.
    path = tmp_path / "pointer"
    path.write_text("old\n")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_open(str(path)) as handle:
            handle.write("new, half written")
            handle.flush()
            raise RuntimeError("writer died")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pointer"]  # the temporary was removed


def test_atomic_torch_save_keeps_the_old_checkpoint_when_saving_fails(tmp_path):
    # Catches: atomic_torch_save calling torch.save on the path itself (a failing save leaves half a file).
    path = tmp_path / "model.pth.tar-1"
    atomic_torch_save({"state_dict": {"ctx": torch.ones(3)}}, str(path))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"state_dict": {"ctx": torch.zeros(10_000)}, "bad": Unpicklable()}, str(path))
    assert torch.equal(load_checkpoint_file(str(path))["state_dict"]["ctx"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth.tar-1"]


DIES_MID_WRITE = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    import torch
    from common.fileio import atomic_open
    assert "dassl" not in sys.modules
    path = {path!r}
    if path.endswith("pointer"):
        with atomic_open(path) as handle:
            handle.write("model.pth.tar-2")
            handle.flush()
            os.fsync(handle.fileno())
            os._exit(17)  # dies inside the with block: no exception, no cleanup, no rename
    import io
    buffer = io.BytesIO()
    torch.save({{"state_dict": {{"ctx": torch.zeros(100_000)}}}}, buffer)
    with atomic_open(path, "wb") as handle:  # what atomic_torch_save does, killed half way through the bytes
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        handle.flush()
        os.fsync(handle.fileno())
        os._exit(17)
""")


@pytest.mark.parametrize("name", ["pointer", "model.pth.tar-1"])
def test_a_process_that_dies_mid_write_leaves_the_old_file(tmp_path, name):
    # Catches: atomic_open writing in place (open(path, mode)): the process dies with half the new bytes in the
    # file. Simulated with os._exit in a child process, which skips every except/finally block.
    path = tmp_path / name
    if name == "pointer":
        path.write_text("model.pth.tar-1\n")
    else:
        atomic_torch_save({"state_dict": {"ctx": torch.ones(3)}}, str(path))
    child = subprocess.run([sys.executable, "-c", DIES_MID_WRITE.format(repo=REPO, path=str(path))],
                           capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.returncode == 17, child.stderr
    if name == "pointer":
        assert path.read_text() == "model.pth.tar-1\n"
    else:
        assert torch.equal(load_checkpoint_file(str(path))["state_dict"]["ctx"], torch.ones(3))
    # What the dead writer leaves is a hidden temporary, which no checkpoint lookup takes for a checkpoint.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != name]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".{name}.") and leftovers[0].endswith(".tmp")
    assert checkpoints.checkpoint_epochs(str(tmp_path)) == ([] if name == "pointer" else [1])


# ----- a stand-in trainer -----
class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ctx = torch.nn.Parameter(torch.randn(2, 4))

    def class_specific_parameters(self):
        return []


class Trainer(CheckpointMethods):
    """What ``CheckpointMethods`` uses of ``PromptTrainer``; one "epoch" is one step that draws from torch, NumPy
    and Python's random, as Dassl's sampler and the augmentations do."""

    MODEL_NAME = "prompt_learner"

    def __init__(self, keep=2, name="CoOp"):
        self.cfg = CN({"TRAINER": CN({"NAME": name}), "TRAIN": CN({"KEEP_CHECKPOINTS": keep}),
                       "OPTIM": CN({"MAX_EPOCH": 10})})
        self.max_epoch = 10  # Dassl's trainer sets it from OPTIM.MAX_EPOCH
        torch.manual_seed(0)
        self.model = TinyModel()
        self.optim = torch.optim.SGD([self.model.ctx], lr=0.1, momentum=0.9)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.optim, 10)

    def learned_parameters(self):
        return {"prompt_learner.ctx": self.model.ctx}

    def epoch(self):
        noise = torch.randn(2, 4) * float(np.random.rand()) * random.random()
        loss = ((self.model.ctx - noise) ** 2).sum()
        self.optim.zero_grad()
        loss.backward()
        self.optim.step()
        self.sched.step()

    def train(self, directory, epochs, start=0):
        for epoch in range(start, epochs):
            self.epoch()
            self.save_model(epoch, str(directory))
        return self.model.ctx.detach().clone()


def seed_all(seed=5):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def trained(tmp_path, epochs=3, keep=0, name="run"):
    seed_all()
    directory = tmp_path / name
    Trainer(keep).train(directory, epochs)
    return directory, directory / "prompt_learner"


def resume(directory, keep=0):
    seed_all(123)  # a new process starts from other random states
    trainer = Trainer(keep)
    return trainer, trainer.resume_model_if_exist(str(directory))


# ----- a corrupt newest checkpoint -----
def corrupt(path, how):
    data = bytearray(path.read_bytes())
    if how == "random bytes":
        path.write_bytes(os.urandom(len(data)))
    elif how == "cut short":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "empty":
        path.write_bytes(b"")
    else:  # "a flipped byte": still a zip archive, one tensor byte changed (torch itself would load it)
        with zipfile.ZipFile(path) as archive:
            info = next(i for i in archive.infolist() if i.filename.endswith("data/0"))
        header = info.header_offset  # the local header's name and extra lengths (the extra pads for alignment)
        start = header + 30 + int.from_bytes(data[header + 26:header + 28], "little") + \
            int.from_bytes(data[header + 28:header + 30], "little")
        data[start + 5] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["random bytes", "cut short", "empty", "a flipped byte"])
def test_a_corrupt_newest_checkpoint_is_skipped_for_the_newest_readable_one(tmp_path, how):
    # Catches: a corrupt last checkpoint stopping the resume (with a message blaming unsafe pickling), or being
    # loaded (a flipped byte: torch does not check the zip CRCs); and a fallback that restores the wrong states.
    directory, folder = trained(tmp_path, epochs=3)
    seed_all()
    uninterrupted = Trainer(0).train(tmp_path / "reference", 4)
    corrupt(folder / f"{CHECKPOINT_PREFIX}3", how)
    if how == "a flipped byte":
        torch.load(folder / f"{CHECKPOINT_PREFIX}3", weights_only=True)  # torch alone would take it

    with pytest.warns(CheckpointWarning, match=f"{CHECKPOINT_PREFIX}3 is corrupt") as warned:
        trainer, epoch = resume(directory)
    assert epoch == 2
    message = " ".join(str(w.message) for w in warned if w.category is CheckpointWarning)
    assert "corrupt" in message and "could run code" not in message and "arbitrary pickled" not in message
    if how in ("random bytes", "cut short", "empty"):
        assert "not a torch archive" in message
    # The resumed run goes on exactly as the uninterrupted one (parameters, optimiser, schedule, random states).
    assert torch.equal(trainer.train(directory, 4, start=epoch), uninterrupted)


def test_every_checkpoint_corrupt_stops_with_one_message(tmp_path):
    # Catches: a resume that, finding no readable checkpoint, silently trains from scratch over the old run.
    directory, folder = trained(tmp_path, epochs=2)
    for epoch in (1, 2):
        corrupt(folder / f"{CHECKPOINT_PREFIX}{epoch}", "random bytes")
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError, match="No readable checkpoint"):
        resume(directory)


def test_evaluation_calls_a_corrupt_checkpoint_corrupt(tmp_path):
    # Catches: the message blaming unsafe pickling for a file that is simply damaged.
    directory, folder = trained(tmp_path, epochs=1)
    corrupt(folder / f"{CHECKPOINT_PREFIX}1", "random bytes")
    with pytest.raises(CorruptCheckpoint, match="is corrupt: it is not a torch archive"):
        Trainer().load_model(str(directory))


# ----- files that load but are not checkpoints, and resumes that cannot work -----
def good_state():
    return {"trainer": "CoOp", "state_dict": {"prompt_learner.ctx": torch.zeros(2, 4)}, "epoch": 2,
            "optimizer": torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1).state_dict(),
            "scheduler": {"last_epoch": 2}, "random_states": random_states()}


def without(key):
    state = good_state()
    del state[key]
    return state


BROKEN = {  # contents of the newest checkpoint -> what the one message says
    "a list": ([1, 2], "holds a list"),
    "a tensor": (torch.zeros(3), "holds a Tensor"),
    "no state_dict": (without("state_dict"), "has no state_dict"),
    "a string ctx": ({**good_state(), "state_dict": {"prompt_learner.ctx": "abc"}}, "is a str, not a tensor"),
    "a string epoch": ({**good_state(), "epoch": "x"}, "its epoch is 'x'"),
    "no optimizer": (without("optimizer"), "has no optimizer"),
    "no scheduler": (without("scheduler"), "has no scheduler"),
    "no epoch": (without("epoch"), "has no epoch"),
    "a foreign optimizer": ({**good_state(), "optimizer": {"state": {}}}, "optimiser state cannot be restored"),
    "damaged random states": ({**good_state(), "random_states": {"python": 1}}, "random states cannot be restored"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_checkpoint_that_loads_but_is_wrong_stops_the_resume_with_one_message(tmp_path, case):
    # Catches: KeyError/TypeError tracebacks (today: no optimizer/scheduler/epoch, a foreign optimizer state,
    # damaged random states, a string epoch), and a fallback that would hide a file that is not a checkpoint.
    contents, message = BROKEN[case]
    directory, folder = trained(tmp_path, epochs=2)
    torch.save(contents, folder / f"{CHECKPOINT_PREFIX}2")
    with pytest.raises(CheckpointError, match=message) as stopped:
        resume(directory)
    assert type(stopped.value) is CheckpointError and f"{CHECKPOINT_PREFIX}2" in str(stopped.value)


def test_a_crafted_checkpoint_stops_the_resume_without_running(tmp_path):
    # Catches: a resume that loads the newest checkpoint unsafely, or that treats a refused file as corrupt and
    # quietly resumes from an older one.
    directory, folder = trained(tmp_path, epochs=2)
    marker = tmp_path / "pwned"
    crafted_checkpoint(folder / f"{CHECKPOINT_PREFIX}2", marker)
    with pytest.raises(CheckpointError, match="could run code"):
        resume(directory)
    assert not marker.exists()


# ----- the pointer file -----
@pytest.mark.parametrize("named", ["../elsewhere/model.pth.tar-9", "ABSOLUTE", "sub/model.pth.tar-9", "..", "",
                                   "config.yaml", "model.pth.tar-7"])
def test_the_pointer_may_only_name_a_checkpoint_of_its_own_folder(tmp_path, named):
    # Catches: a pointer followed outside its folder (../x, an absolute path, a subfolder) or to a file that is
    # no checkpoint; the resume must fall back to the newest model.pth.tar-N, here epoch 2.
    directory, folder = trained(tmp_path, epochs=2)
    outside = {"../elsewhere/model.pth.tar-9": directory / "elsewhere", "sub/model.pth.tar-9": folder / "sub",
               "ABSOLUTE": tmp_path / "abs"}.get(named)
    if outside is not None:  # a loadable checkpoint of epoch 9 there: following the pointer would resume at 9
        outside.mkdir()
        torch.save({**torch.load(folder / f"{CHECKPOINT_PREFIX}2", weights_only=True), "epoch": 9},
                   outside / f"{CHECKPOINT_PREFIX}9")
    if named == "ABSOLUTE":
        named = str(tmp_path / "abs" / f"{CHECKPOINT_PREFIX}9")
    (folder / "config.yaml").write_text("A: 1\n")
    (folder / POINTER).write_text(named + "\n")
    with pytest.warns(CheckpointWarning, match="it is ignored"):
        _, epoch = resume(directory)
    assert epoch == 2


def test_without_a_pointer_the_newest_checkpoint_is_resumed_and_the_best_one_last(tmp_path):
    # Catches: a run whose pointer file is missing starting from scratch over its own checkpoints.
    directory, folder = trained(tmp_path, epochs=2)
    (folder / POINTER).unlink()
    (folder / BEST_CHECKPOINT).write_bytes((folder / f"{CHECKPOINT_PREFIX}1").read_bytes())
    assert [os.path.basename(p) for p in resume_candidates(str(folder))] == [
        f"{CHECKPOINT_PREFIX}2", f"{CHECKPOINT_PREFIX}1", BEST_CHECKPOINT]
    assert resume(directory)[1] == 2


# ----- how many checkpoints a run keeps -----
def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_run_keeps_its_newest_checkpoints_and_the_best_one(tmp_path):
    # Catches: every epoch's checkpoint kept forever, the best one deleted, or KEEP_CHECKPOINTS 0 deleting any.
    seed_all()
    trainer = Trainer(keep=2)
    for epoch in range(5):
        trainer.epoch()
        trainer.save_model(epoch, str(tmp_path / "two"))
        if epoch == 1:
            trainer.save_model(epoch, str(tmp_path / "two"), model_name=BEST_CHECKPOINT)
    assert files(tmp_path / "two" / "prompt_learner") == [POINTER, BEST_CHECKPOINT, f"{CHECKPOINT_PREFIX}4",
                                                          f"{CHECKPOINT_PREFIX}5"]
    assert load_checkpoint_file(str(tmp_path / "two" / "prompt_learner" / BEST_CHECKPOINT))["epoch"] == 2

    _, folder = trained(tmp_path, epochs=4, keep=0, name="all")
    assert checkpoints.checkpoint_epochs(str(folder)) == [1, 2, 3, 4]
    _, folder = trained(tmp_path, epochs=3, keep=1, name="one")
    assert files(folder) == [POINTER, f"{CHECKPOINT_PREFIX}3"]


def test_the_default_is_two_checkpoints_and_a_negative_number_is_refused(tmp_path):
    # Catches: the config key missing or with another default; a negative KEEP_CHECKPOINTS deleting everything.
    from trainers.config import add_project_keys

    cfg = CN({"DATASET": CN(), "MODEL": CN({"BACKBONE": CN()}), "TRAIN": CN()})
    add_project_keys(cfg)
    assert cfg.TRAIN.KEEP_CHECKPOINTS == 2
    trainer = Trainer(keep=-1)
    with pytest.raises(CheckpointError, match="TRAIN.KEEP_CHECKPOINTS is -1"):
        trainer.resume_model_if_exist(str(tmp_path))  # before any training, not after the first epoch
    with pytest.raises(CheckpointError, match="TRAIN.KEEP_CHECKPOINTS is -1"):
        trainer.save_model(0, str(tmp_path))


def test_old_checkpoints_are_deleted_only_once_the_new_one_is_complete_and_named(tmp_path, monkeypatch):
    # Catches: deleting old checkpoints before the new one is written (atomically) and the pointer updated, so a
    # crash in between would leave nothing to resume from.
    folder = tmp_path / "prompt_learner"
    for epoch in (1, 2):
        save_checkpoint({"state_dict": {}, "epoch": epoch}, str(folder), f"{CHECKPOINT_PREFIX}{epoch}", keep=2)
    remove = os.remove
    removed = []

    def checked_remove(path, *args, **kwargs):
        assert (folder / POINTER).read_text() == f"{CHECKPOINT_PREFIX}3\n"
        assert load_checkpoint_file(str(folder / f"{CHECKPOINT_PREFIX}3"))["epoch"] == 3
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
        removed.append(os.path.basename(path))
        return remove(path, *args, **kwargs)

    monkeypatch.setattr(os, "remove", checked_remove)
    monkeypatch.setattr(os, "unlink", checked_remove)
    save_checkpoint({"state_dict": {}, "epoch": 3}, str(folder), f"{CHECKPOINT_PREFIX}3", keep=2)
    assert removed == [f"{CHECKPOINT_PREFIX}1"]

    # A save that fails half way deletes nothing and leaves the pointer where it was.
    monkeypatch.setattr(os, "remove", remove)
    monkeypatch.setattr(os, "unlink", remove)

    def failing_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"state_dict": {}, "epoch": 4}, str(folder), f"{CHECKPOINT_PREFIX}4", keep=2)
    assert files(folder) == [POINTER, f"{CHECKPOINT_PREFIX}2", f"{CHECKPOINT_PREFIX}3"]
    assert (folder / POINTER).read_text() == f"{CHECKPOINT_PREFIX}3\n"


def test_checkpoints_of_later_epochs_are_not_deleted(tmp_path):
    # Catches: pruning by "newest K files" deleting the checkpoint just written when a folder holds later epochs
    # (another run's, e.g. a longer run resumed from an early checkpoint).
    folder = tmp_path / "prompt_learner"
    for epoch in (1, 2, 9):
        save_checkpoint({"state_dict": {}, "epoch": epoch}, str(folder), f"{CHECKPOINT_PREFIX}{epoch}", keep=0)
    save_checkpoint({"state_dict": {}, "epoch": 3}, str(folder), f"{CHECKPOINT_PREFIX}3", keep=1)
    assert checkpoints.checkpoint_epochs(str(folder)) == [3, 9]
