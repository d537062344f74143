"""Checkpoints and random states: what a run saves, how a checkpoint is found, checked and loaded.

A checkpoint holds only learned parameters, optimiser and schedule state, the random states and whatever a trainer
adds (plain tensors and numbers), is written atomically, and is loaded with ``weights_only=True``: a file that
needs arbitrary pickled objects is refused, since loading it could run code. A file that is not a torch archive
(torch saves zip archives) is called corrupt and never unpickled. A run keeps its newest ``TRAIN.KEEP_CHECKPOINTS``
epoch checkpoints (and the best one); a resume whose newest checkpoint is corrupt falls back to the newest
readable one. No Dassl here.
"""
import glob
import os
import pickle
import pickletools
import random
import re
import warnings
import zipfile

import numpy as np
import torch

from common.fileio import atomic_open, atomic_torch_save

CHECKPOINT_PREFIX = "model.pth.tar-"
BEST_CHECKPOINT = "model-best.pth.tar"
POINTER = "checkpoint"  # names the newest checkpoint of a folder (Dassl's convention)
DEFAULT_KEEP = 2  # TRAIN.KEEP_CHECKPOINTS when a config lacks the key
_NUMBERED = re.compile(re.escape(CHECKPOINT_PREFIX) + r"(\d+)")


class CheckpointError(RuntimeError):
    pass


class CorruptCheckpoint(CheckpointError):
    """A file that cannot be read as a torch archive at all (cut short, overwritten, random bytes): a resume
    skips it for an older checkpoint, where a file that loads but is wrong stops the run."""


class CheckpointWarning(UserWarning):
    pass


def _warn(message):
    warnings.warn(message, CheckpointWarning, stacklevel=3)


def checkpoint_epochs(folder):
    epochs = []
    for path in glob.glob(os.path.join(glob.escape(folder), CHECKPOINT_PREFIX + "*")):
        match = _NUMBERED.fullmatch(os.path.basename(path))
        if match and os.path.isfile(path):
            epochs.append(int(match.group(1)))
    return sorted(epochs)


def _short(err, limit=300):
    """The telling line of an exception's message (torch's weights-only errors are paragraphs)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error" in line or "Unsupported global" in line:
            line = line.split("WeightsUnpickler error:", 1)[-1].strip()
            return line.split(". ", 1)[0][:limit]  # not torch's advice to allowlist the global
    return (lines[0] if lines else type(err).__name__)[:limit]


def _well_formed_pickle(path):
    """Whether the archive's ``data.pkl`` is a complete pickle (read without running it): then a weights-only
    refusal means the file asks for objects that could run code, not that it is damaged."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(names) != 1:
                return False
            data = archive.read(names[0])  # checks the CRC
        for _ in pickletools.genops(data):
            pass
        return True
    except Exception:
        return False


def load_checkpoint_file(path):
    """The contents of a checkpoint file, loaded on the CPU with ``weights_only=True``. Raises ``CorruptCheckpoint``
    for a file that is not a readable torch archive, ``CheckpointError`` for one that needs arbitrary objects."""
    try:
        is_archive = zipfile.is_zipfile(path)
    except OSError as err:
        raise CorruptCheckpoint(f"Cannot read checkpoint {path}: {err.strerror or err}.") from None
    if not is_archive:
        raise CorruptCheckpoint(
            f"Checkpoint {path} is corrupt: it is not a torch archive (torch saves checkpoints as zip archives; this "
            "file was cut short, overwritten, or is something else). It was not unpickled: this toolbox loads only "
            "torch archives, with weights_only=True."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # torch itself does not check the CRCs: a flipped bit would load
    except Exception as err:
        raise CorruptCheckpoint(f"Checkpoint {path} is corrupt: its zip archive cannot be read ({_short(err)}).") from None
    if damaged is not None:
        raise CorruptCheckpoint(f"Checkpoint {path} is corrupt: {damaged} in its archive fails its CRC check.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if _well_formed_pickle(path):
            raise CheckpointError(
                f"Refused checkpoint {path}: loading it with weights_only=True fails ({_short(err)}). Checkpoints "
                "written by this toolbox hold only tensors and numbers; a file that needs arbitrary pickled objects "
                "is refused because loading it could run code."
            ) from None
        raise CorruptCheckpoint(f"Checkpoint {path} is corrupt: its pickle is damaged ({_short(err)}).") from None
    except Exception as err:
        raise CorruptCheckpoint(
            f"Checkpoint {path} is corrupt: torch cannot read the archive ({type(err).__name__}: {_short(err)})."
        ) from None


def check_checkpoint(checkpoint, source):
    """Refuse, with one message, a file that loads but is not a checkpoint of this toolbox: a dict whose
    ``state_dict`` maps names to tensors, and whose ``epoch``, if any, is a positive integer."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{source} is not a checkpoint of this toolbox: it holds a {type(checkpoint).__name__}, "
                              "not a dict with a state_dict of tensors.")
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, dict):
        what = "no state_dict" if state_dict is None else f"a state_dict that is a {type(state_dict).__name__}"
        raise CheckpointError(f"{source} is not a checkpoint of this toolbox: it has {what} (expected a dict of "
                              "tensors).")
    for name, value in state_dict.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {name!s} is a {type(value).__name__}, not a tensor: the file is not a "
                                  "checkpoint of this toolbox, or it is damaged.")
    epoch = checkpoint.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1):
        raise CheckpointError(f"{source}: its epoch is {epoch!r}, not a positive integer: the file is not a "
                              "checkpoint of this toolbox, or it is damaged.")


def trained_max_epoch(checkpoint):
    """The ``OPTIM.MAX_EPOCH`` of the run that wrote ``checkpoint``: its ``max_epoch`` field, else (a checkpoint
    written before that field) the cosine schedule's ``T_max``, else ``None`` (not known)."""
    value = checkpoint.get("max_epoch")
    if value is None:
        scheduler = checkpoint.get("scheduler")
        scheduler = scheduler.get("successor", scheduler) if isinstance(scheduler, dict) else None
        value = scheduler.get("T_max") if isinstance(scheduler, dict) else None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def check_epoch_range(checkpoint, source, max_epoch=None):
    """The checkpoint's epoch lies within the run that wrote it (and within ``max_epoch``, the schedule of a run
    resuming from it): an epoch beyond it would train nothing and still record a result."""
    epoch = checkpoint.get("epoch")
    if epoch is None:
        return
    limits = [(limit, what) for limit, what in ((trained_max_epoch(checkpoint), "the run that wrote it"),
                                                 (max_epoch, "this run (OPTIM.MAX_EPOCH)")) if limit is not None]
    for limit, what in limits:
        if epoch > limit:
            raise CheckpointError(f"{source}: its epoch is {epoch}, beyond the {limit} epochs of {what}: the file is "
                                  "damaged or not a checkpoint of this run. Use an earlier checkpoint, or train in a "
                                  "fresh output folder.")


def check_same_schedule(checkpoint, source, max_epoch, output_dir):
    """A resume keeps the schedule it was trained with: a different ``OPTIM.MAX_EPOCH`` is refused (it would
    silently train under the old schedule, or stop at once), saying how to finish the run or to start over."""
    trained = trained_max_epoch(checkpoint)
    if trained is not None and trained != max_epoch:
        raise CheckpointError(
            f"{source} was trained with OPTIM.MAX_EPOCH {trained}, and this command asks for {max_epoch}: a resume "
            f"cannot change the schedule. Run with OPTIM.MAX_EPOCH {trained} to finish that run, or start over in "
            f"another --output-dir (or move {output_dir} away).")


RESUME_KEYS = ("epoch", "optimizer", "scheduler")


def check_resumable(checkpoint, source):
    """What a resume needs beyond ``check_checkpoint``: the epoch, the optimiser's and the schedule's state."""
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{source} cannot be resumed from: it has no {' and no '.join(missing)} (it was not "
                              "written by a training run of this toolbox). Train in a fresh output folder.")
    for key in ("optimizer", "scheduler", "random_states"):
        if key in checkpoint and not isinstance(checkpoint[key], dict):
            raise CheckpointError(f"{source} cannot be resumed from: its {key} is a "
                                  f"{type(checkpoint[key]).__name__}, not a dict (the file is damaged).")


def _restore(what, source, apply, value):
    try:
        apply(value)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{source} cannot be resumed from: its {what} cannot be restored "
                              f"({type(err).__name__}: {_short(err)}). Resume with the same options, or train in "
                              "a fresh output folder.") from None


def keep_checkpoints(cfg):
    """``TRAIN.KEEP_CHECKPOINTS``, checked: how many epoch checkpoints a run keeps (0: all)."""
    keep = cfg.TRAIN.get("KEEP_CHECKPOINTS", DEFAULT_KEEP)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise CheckpointError(f"TRAIN.KEEP_CHECKPOINTS is {keep!r}; it must be 0 (keep every epoch's checkpoint) or "
                              "a positive number of checkpoints to keep.")
    return keep


def prune_checkpoints(folder, newest_epoch, keep):
    """Delete the epoch checkpoints older than the ``keep`` newest up to ``newest_epoch`` (0: delete none); the
    best checkpoint, and checkpoints of later epochs (another run's, in this folder), are never touched."""
    if keep <= 0:
        return []
    deleted = []
    for epoch in [e for e in checkpoint_epochs(folder) if e <= newest_epoch][:-keep]:
        path = os.path.join(folder, f"{CHECKPOINT_PREFIX}{epoch}")
        try:
            os.remove(path)
            deleted.append(path)
        except OSError as err:
            _warn(f"Cannot delete the old checkpoint {path}: {err.strerror or err}")
    return deleted


def save_checkpoint(state, folder, name, keep=0):
    """Write ``state`` as ``folder/name`` and point the folder's pointer file at it; then, for an epoch
    checkpoint, delete all but the ``keep`` newest (0: none). Returns the path."""
    path = os.path.join(folder, name)
    atomic_torch_save(state, path)
    with atomic_open(os.path.join(folder, POINTER)) as handle:
        handle.write(name + "\n")
    match = _NUMBERED.fullmatch(name)
    if match:  # only now that the new checkpoint is complete and named by the pointer
        prune_checkpoints(folder, int(match.group(1)), keep)
    return path


def _is_checkpoint_name(name):
    return name == BEST_CHECKPOINT or _NUMBERED.fullmatch(name) is not None


def pointer_target(folder):
    """The checkpoint the folder's pointer file names, or ``None``: when there is no pointer, or (with a warning)
    when it names anything but an existing checkpoint file of this very folder (``../x``, ``/abs``, ``sub/x``)."""
    pointer = os.path.join(folder, POINTER)
    if not os.path.isfile(pointer):
        return None
    try:
        with open(pointer, encoding="utf-8", errors="replace") as handle:
            name = handle.readline(4096).strip()
    except OSError as err:
        _warn(f"Cannot read the checkpoint pointer {pointer} ({err.strerror or err}): it is ignored.")
        return None
    if not name:
        problem = "nothing"
    elif "/" in name or "\\" in name or os.path.isabs(name) or "\0" in name:
        problem = "a path, not a file of its own folder"
    elif not _is_checkpoint_name(name):
        problem = f"no checkpoint ({CHECKPOINT_PREFIX}<epoch> or {BEST_CHECKPOINT})"
    elif not os.path.isfile(os.path.join(folder, name)):
        problem = "a file that does not exist"
    else:
        return os.path.join(folder, name)
    _warn(f"The checkpoint pointer {pointer} names {name[:200]!r}, {problem}: it is ignored, and the newest "
          f"{CHECKPOINT_PREFIX}<epoch> of {folder} is used instead.")
    return None


def resume_candidates(folder):
    """The checkpoints a resume may start from, in order: the one the pointer names, then the epoch checkpoints,
    newest first, then the best one."""
    candidates = []
    named = pointer_target(folder)
    epochs = [os.path.join(folder, f"{CHECKPOINT_PREFIX}{e}") for e in reversed(checkpoint_epochs(folder))]
    best = [os.path.join(folder, BEST_CHECKPOINT)] if os.path.isfile(os.path.join(folder, BEST_CHECKPOINT)) else []
    for path in ([named] if named else []) + epochs + best:
        if path not in candidates:
            candidates.append(path)
    return candidates


def newest_checkpoint(folder):
    """The checkpoint to resume from (see ``resume_candidates``), or ``None``."""
    candidates = resume_candidates(folder)
    return candidates[0] if candidates else None


def checkpoint_to_evaluate(directory, folder, epoch=None):
    """The checkpoint to evaluate: the given epoch's, else the best-on-validation one, else the last epoch's."""
    epochs = checkpoint_epochs(folder)
    if epoch is not None:
        path = os.path.join(folder, f"{CHECKPOINT_PREFIX}{epoch}")
        if not os.path.isfile(path):
            have = ", ".join(map(str, epochs)) or "none"
            raise CheckpointError(f"No checkpoint for epoch {epoch} in {folder} (epochs saved: {have}; a run keeps "
                                  "only its newest TRAIN.KEEP_CHECKPOINTS epoch checkpoints, 0 keeps all).")
        return path
    if os.path.isfile(os.path.join(folder, BEST_CHECKPOINT)):
        return os.path.join(folder, BEST_CHECKPOINT)
    if epochs:
        return os.path.join(folder, f"{CHECKPOINT_PREFIX}{epochs[-1]}")
    raise CheckpointError(
        f"No checkpoint in {directory}: expected {folder}/{CHECKPOINT_PREFIX}<epoch> or {BEST_CHECKPOINT}. "
        "Train first, or point --model-dir at the output folder of a finished training run."
    )


def check_writer(checkpoint, trainer, source):
    """Refuse a file that is not a checkpoint of this toolbox (``check_checkpoint``), or one written by another
    trainer (older checkpoints, which do not say, are accepted)."""
    check_checkpoint(checkpoint, source)
    writer = checkpoint.get("trainer")
    if writer is not None and writer != trainer:
        raise CheckpointError(f"{source} was written by {writer}, not {trainer}: evaluate it with "
                              f"--trainer {writer} (its parameters mean something else to another trainer).")


def copy_learned(learned, class_specific, state_dict, source, known=None, trainer="this trainer"):
    """Copy the saved values into the ``learned`` parameters (name -> parameter), checking each one.

    Entries of the model's that it does not learn are ignored (class-dependent buffers: a context trained on base
    classes evaluates on new ones). Entries the model does not have at all (``known``: every name of its state
    dict) mean another trainer wrote the file (a checkpoint written before the ``trainer`` field does not say so):
    refused."""
    missing = [name for name in learned if name not in state_dict]
    if missing:
        raise CheckpointError(f"{source} lacks learned parameters {', '.join(missing)}.")
    foreign = [name for name in state_dict if name not in learned and known is not None and name not in known]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise CheckpointError(f"{source} holds {shown}, which {trainer} does not have: it was written by another "
                              "trainer (or for another N_CTX or model). Evaluate it with the trainer that wrote it.")
    ignored = [name for name in state_dict if name not in learned]
    if ignored:
        print(f"Ignoring entries of {source} that this model does not learn: {', '.join(ignored)}")
    for name, param in learned.items():
        saved = state_dict[name]
        if not isinstance(saved, torch.Tensor):
            raise CheckpointError(f"{source}: {name} is a {type(saved).__name__}, not a tensor: the file is not a "
                                  "checkpoint of this toolbox, or it is damaged.")
        if param.is_floating_point() and not saved.is_floating_point():
            raise CheckpointError(f"{source}: {name} is a tensor of {str(saved.dtype).replace('torch.', '')}, not of "
                                  "floating-point numbers like the learned parameter: the file is not a checkpoint "
                                  "of this toolbox, or it is damaged.")
        if saved.is_floating_point() and not torch.isfinite(saved).all():
            raise CheckpointError(f"{source}: {name} holds NaN or infinite values; a model with them would only "
                                  "record nonsense. Use an earlier checkpoint, or train again.")
        if saved.shape != param.shape:
            if name in class_specific and saved.shape[1:] == param.shape[1:]:
                raise CheckpointError(
                    f"{source}: {name} is class-specific (CSC True) and was learned for {saved.shape[0]} "
                    f"classes, but this dataset has {param.shape[0]}. Class-specific context cannot transfer "
                    "to other classes; use class-shared context (CSC False) for base-to-new or cross-dataset."
                )
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(saved.shape)} but the model expects {tuple(param.shape)} "
                "(a different backbone or N_CTX?)."
            )
        with torch.no_grad():
            param.copy_(saved.to(param.dtype))


def random_states():
    """Every random state that decides the rest of a run, as plain data (tensors, numbers, tuples).

    The training sampler and the augmentations draw from these (Dassl's RandomSampler seeds itself from torch's
    global generator at each epoch; its other samplers use Python's ``random``), so restoring them at a
    checkpoint makes the resumed run draw exactly what the uninterrupted run drew."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states):
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class CheckpointMethods:
    """The checkpoint half of ``PromptTrainer`` (Dassl's ``save_model``, ``load_model`` and
    ``resume_model_if_exist``); it uses the trainer's ``cfg``, ``model``, ``optim``, ``sched``, ``MODEL_NAME``,
    ``learned_parameters()``, ``loaded_epoch`` and ``loaded_from``."""

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        if not self.learned_parameters():
            return
        keep = keep_checkpoints(self.cfg)
        state = {"trainer": self.cfg.TRAINER.NAME,  # a checkpoint is only loaded by the trainer that wrote it
                 "state_dict": {name: p.detach().cpu().clone() for name, p in self.learned_parameters().items()},
                 "epoch": epoch + 1, "max_epoch": self.max_epoch,
                 "optimizer": self.optim.state_dict(), "scheduler": self.sched.state_dict(),
                 "val_result": val_result, "random_states": random_states(),
                 **self.extra_checkpoint_state()}
        name = model_name or f"{CHECKPOINT_PREFIX}{epoch + 1}"
        print(f"Checkpoint saved to "
              f"{save_checkpoint(state, os.path.join(directory, self.MODEL_NAME), name, keep)}")

    def extra_checkpoint_state(self):
        """Training state of a subclass beyond parameters, optimiser and schedule (plain tensors and numbers)."""
        return {}

    def load_extra_checkpoint_state(self, checkpoint, source):
        """Restore ``extra_checkpoint_state`` when a run resumes."""

    def load_checkpoint(self, path, checkpoint=None):
        """Load (unless given), check and copy a checkpoint's learned parameters into the model; returns it."""
        if checkpoint is None:
            checkpoint = load_checkpoint_file(path)
        check_writer(checkpoint, self.cfg.TRAINER.NAME, path)
        check_epoch_range(checkpoint, path)
        copy_learned(self.learned_parameters(), set(self.model.class_specific_parameters()),
                     checkpoint["state_dict"], path, known=set(self.model.state_dict()), trainer=self.cfg.TRAINER.NAME)
        return checkpoint

    def load_model(self, directory, epoch=None):
        if not directory:
            print("No --model-dir given: evaluating the model as built (no checkpoint loaded)")
            return
        if not self.learned_parameters():
            print(f"{self.cfg.TRAINER.NAME} learns nothing: --model-dir is not needed and is ignored")
            return
        path = checkpoint_to_evaluate(directory, os.path.join(directory, self.MODEL_NAME), epoch)
        self.loaded_epoch = self.load_checkpoint(path).get("epoch")
        self.loaded_from = os.path.abspath(directory)
        print(f"Loaded {path} (epoch {self.loaded_epoch})")

    def resume_model_if_exist(self, directory):
        """Resume from the checkpoint the folder's pointer names; one that is corrupt (not a readable torch
        archive) is skipped, with a warning, for the newest readable one. Anything else wrong stops the run."""
        if not self.learned_parameters():
            print("No checkpoint found, train from scratch")
            return 0
        keep_checkpoints(self.cfg)  # a bad TRAIN.KEEP_CHECKPOINTS stops the run now, not after its first epoch
        folder = os.path.join(directory, self.MODEL_NAME)
        candidates = resume_candidates(folder)
        if not candidates:
            print("No checkpoint found, train from scratch")
            return 0
        skipped = []
        for path in candidates:
            try:
                checkpoint = load_checkpoint_file(path)
                break
            except CorruptCheckpoint as err:
                skipped.append(path)
                _warn(f"{err} Resuming from the newest readable checkpoint instead.")
        else:
            raise CheckpointError(f"No readable checkpoint in {folder}: {', '.join(map(os.path.basename, skipped))} "
                                  "are corrupt. Move the folder away to train from scratch.")
        check_checkpoint(checkpoint, path)
        check_resumable(checkpoint, path)
        check_writer(checkpoint, self.cfg.TRAINER.NAME, path)
        check_same_schedule(checkpoint, path, self.cfg.OPTIM.MAX_EPOCH, directory)
        check_epoch_range(checkpoint, path, self.cfg.OPTIM.MAX_EPOCH)
        self.load_checkpoint(path, checkpoint)
        _restore("optimiser state", path, self.optim.load_state_dict, checkpoint["optimizer"])
        _restore("schedule state", path, self.sched.load_state_dict, checkpoint["scheduler"])
        if "random_states" in checkpoint:
            _restore("random states", path, restore_random_states, checkpoint["random_states"])
        self.load_extra_checkpoint_state(checkpoint, path)
        note = f", skipping corrupt {', '.join(map(os.path.basename, skipped))}" if skipped else ""
        print(f"Resumed from {path} (epoch {checkpoint['epoch']}{note})")
        return checkpoint["epoch"]
