"""Every command that README.md and docs/*.md show in a ``bash`` block, as a user runs it: collected from the files
(never copied here), each either run in a fresh shell and interpreter from the repository root, with DATA and
OUTPUT in a temporary folder and the generated world datasets, or listed in CANNOT_RUN with the reason. A command
added to the documents without an entry in RUNS or CANNOT_RUN fails ``test_every_command_is_run_or_listed``.

Nothing here may come from the test process (conftest registers every trainer and dataset and edits sys.path for
the whole session): each command is a new ``bash -c`` with the environment a user has."""
import glob
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field

import pytest
from fixtures import REPO

pytestmark = pytest.mark.integration

DOCUMENTS = ["README.md", *sorted(os.path.relpath(path, REPO) for path in glob.glob(os.path.join(REPO, "docs", "*.md")))]
ASSIGNMENT = re.compile(r"^(export )?([A-Z_]+=(\"[^\"]*\"|\S+) ?)+$")  # a line that only sets variables


def strip_comment(line):
    """``line`` without its trailing ``# comment``: a ``#`` that begins a word, outside quotes, as in bash."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].strip()
    return line.strip()


@dataclass(frozen=True)
class DocCommand:
    text: str  # as the document shows it (continuations joined, comment removed)
    setup: tuple  # the assignment lines above it in its block (``P=TRAINER.DUALMIPROMPT``, ``export XD_SOURCE=...``)
    where: str  # document:line


def doc_commands():
    """Every command of every ``bash`` block of the documents, in order. A block with a loop is one command."""
    commands = []
    for document in DOCUMENTS:
        with open(os.path.join(REPO, document)) as handle:
            text = handle.read()
        for match in re.finditer(r"^```bash\n(.*?)^```", text, re.S | re.M):
            first_line = text[: match.start(1)].count("\n") + 1
            lines = [(first_line + k, line) for k, line in enumerate(match.group(1).split("\n"))]
            logical = []  # (line number, text) with ``\`` continuations joined
            for number, line in lines:
                if logical and logical[-1][1].endswith("\\"):
                    logical[-1] = (logical[-1][0], logical[-1][1][:-1].rstrip() + " " + line.strip())
                else:
                    logical.append((number, line))
            logical = [(number, strip_comment(line)) for number, line in logical]
            logical = [(number, line) for number, line in logical if line]
            if any(re.match(r"(for|while|if) ", line) for _, line in logical):
                commands.append(DocCommand("\n".join(line for _, line in logical), (),
                                           f"{document}:{logical[0][0]}"))
                continue
            setup = []
            for number, line in logical:
                if ASSIGNMENT.match(line):
                    setup.append(line)
                else:
                    commands.append(DocCommand(line, tuple(setup), f"{document}:{number}"))
    return commands


COMMANDS = doc_commands()
QUICK = "-- OPTIM.MAX_EPOCH 1 OPTIM.WARMUP_EPOCH 0"  # one epoch on 2 shots: enough to go through every step


@dataclass(frozen=True)
class Run:
    """How a command is run here. ``append``: words added at the end, or just before its ``--`` (``--dry-run``,
    one epoch, ...); ``help``: the program with ``--help`` instead of its arguments (a full run is hours on a
    CPU); ``env``: variables set for it; ``data``: which DATA (``world``: the generated datasets, shared;
    ``empty``: a folder with nothing prepared; ``fake``: the preparation tool's sources replaced by fake archives
    on 127.0.0.1); ``after``: a command whose run this one reads; ``code``: the expected exit status;
    ``shows``: text its output must contain; ``paths``: files it must leave under OUTPUT."""
    append: str = ""
    help: bool = False
    env: dict = field(default_factory=dict)
    data: str = "world"
    after: str = None
    code: int = 0
    shows: tuple = ()
    paths: tuple = ()


ONE_RUN = {"DATASETS": "world_shapes", "SEEDS": "1"}
WORLD_RUN = "base2new/train_base/world/shots_2/DualMIPrompt/world/seed1/results.json"
RUNS = {
    # the embedded benchmark: the real pipeline on the generated world
    "bash scripts/base2new_train.sh world 1": Run(QUICK, env={"SHOTS": "2"}, paths=(WORLD_RUN,)),
    "bash scripts/base2new_test.sh world 1": Run(
        QUICK, env={"SHOTS": "2"}, after="bash scripts/base2new_train.sh world 1",
        paths=("base2new/test_new/world/shots_2/DualMIPrompt/world/seed1/results.json",)),
    "bash scripts/base2new_train.sh world 1 ZeroshotCLIP": Run(
        env={"SHOTS": "2"}, paths=("base2new/train_base/world/shots_2/ZeroshotCLIP/world/seed1/results.json",)),
    "bash scripts/xd.sh CoOp": Run(QUICK, env={"SHOTS": "2", "SEEDS": "1", "DATASETS": "world_shapes"},
                                   paths=("xd/evaluation/CoOp/world_2shots/world_shapes/seed1/results.json",)),
    "bash scripts/dg.sh CoOp": Run(QUICK, env={"SHOTS": "2", "SEEDS": "1", "DATASETS": "world_sketch"},
                                   after="bash scripts/xd.sh CoOp",
                                   paths=("xd/evaluation/CoOp/world_2shots/world_sketch/seed1/results.json",)),
    # the suite and the sweep: the command line and the tables from the runs there (the runs themselves are
    # covered by test_integration_world.py, one epoch each)
    "python3 scripts/suite.py": Run("--no-run"),
    "python3 scripts/suite.py --quick": Run("--no-run"),
    "python3 scripts/suite.py --quick --workers 2": Run("--no-run"),
    "python3 scripts/suite.py --image-seed 1": Run("--no-run"),
    "python3 scripts/suite.py --image-seed 0 1 2": Run("--no-run"),
    "python3 scripts/suite.py --workers 2": Run("--no-run"),
    "python3 scripts/suite.py --trainers CoOp DualMIPrompt -- TRAINER.DUALMIPROMPT.N_CTX 8": Run("--no-run"),
    "python3 scripts/suite.py --backend slurm --cpus-per-run 1 --time 30": Run("--no-run"),
    "python3 scripts/sweep.py DualMIPrompt --try TRAINER.DUALMIPROMPT.W_ALIGN=8.0": Run("--no-run"),
    "python3 scripts/sweep.py DualMIPrompt --grid TRAINER.DUALMIPROMPT.W_ALIGN=0.0,1.0,8.0 --seeds 1 2":
        Run("--no-run"),
    "python3 scripts/sweep.py DualMIPrompt --try TRAINER.DUALMIPROMPT.W_ALIGN=8.0 "
    "--try TRAINER.DUALMIPROMPT.W_CONSIST=1.0": Run("--no-run"),
    "python3 scripts/sweep.py DualMIPrompt --seeds 1 --try $K.W_ALIGN=8.0 --try $K.W_CONSIST=1.0 --try "
    "$K.TEMPLATES=ensemble --try $K.LEARN_KAPPA=False --try $K.GPA_MEAN=40.0,$K.GPA_STD=5.0 --try $K.W_VIS_MI=0.1 "
    "--try $K.W_ALIGN=8.0,$K.W_CONSIST=1.0": Run("--no-run"),
    "python3 scripts/sweep.py DualMIPrompt --try $P.W_VIS_MI=0.0 --try $P.W_TEXT_MI=0.5 --try $P.W_TEXT_MI=2.0 "
    "--try $P.INFER_BETA=0.2 --try $P.W_TEXT_MI=0.5,$P.W_VIS_MI=0.0 --folds 1 2 --seeds 1 2": Run("--no-run"),
    "python3 scripts/sweep.py DualMIPrompt --try $P.W_VIS_MI=0.0 --try $P.W_TEXT_MI=0.5 --try $P.W_TEXT_MI=2.0 "
    "--try $P.INFER_BETA=0.2 --try $P.W_TEXT_MI=0.5,$P.W_VIS_MI=0.0 --try $P.W_TEXT_MI=0.0,$P.W_VIS_MI=0.0 "
    "--try $P.W_TEXT_MI=0.0 --folds 1 2 --seeds 1 2 --workers 2": Run("--no-run"),
    "python3 scripts/sweep.py DualMIPrompt --try $P.ESTIMATOR=jsd --try $P.ESTIMATOR=dv --try $P.CRITIC=bilinear "
    "--try $P.CRITIC=mlp --try $P.MIX_MODE=intra --try $P.W_TEXT_MI=0.0,$P.W_VIS_MI=0.0 --folds 1 2 --seeds 1 2 "
    "--workers 2": Run("--no-run"),
    "python3 scripts/sweep.py DualMIPrompt --try $P.W_ALIGN=8.0 --try $P.W_CONSIST=1.0 --try "
    "$P.W_TEXT_MI=4.0,$P.LEARN_KAPPA=False --try $P.TEMPLATES=ensemble --try $P.INFER_BETA=0.2 --try "
    "OPTIM.MAX_EPOCH=25 --folds 1 2 --seeds 1 2 --workers 2 -- TRAIN.TRACK_NEW True": Run("--no-run"),
    "python3 scripts/sweep.py CoOp --folds 1 2 --seeds 1 2 --workers 2 -- TRAIN.TRACK_NEW True": Run("--no-run"),
    "python3 scripts/sweep.py KgCoOp --folds 1 2 --seeds 1 2 --workers 2 -- TRAIN.TRACK_NEW True": Run("--no-run"),
    "python3 scripts/sweep.py ZeroshotCLIP --folds 1 2 --seeds 1 2 --workers 2": Run("--no-run"),
    "python3 scripts/sweep.py DualMIPrompt --try $P.W_ALIGN=8.0 --try $P.W_CONSIST=1.0 --try "
    "$P.W_TEXT_MI=4.0,$P.LEARN_KAPPA=False --try $P.TEMPLATES=ensemble --try $P.INFER_BETA=0.2 --try "
    "OPTIM.MAX_EPOCH=25 --folds 1 2 --seeds 1 2 --beside CoOp KgCoOp --no-run -- TRAIN.TRACK_NEW True": Run(),
    "python3 scripts/sweep.py CoOp --folds 1 2 --seeds 1 2 -- TRAIN.TRACK_NEW True": Run("--no-run"),
    "python3 scripts/sweep.py DualMIPrompt --try $P.W_TEXT_MI=0.0 --try $P.W_TEXT_MI=0.5 --try $P.W_TEXT_MI=2.0 "
    "--try OPTIM.MAX_EPOCH=100 --folds 1 2 --seeds 1 2 --workers 2 --beside CoOp KgCoOp -- TRAIN.TRACK_NEW True":
        Run("--no-run"),
    "python3 scripts/sweep.py DualMIPrompt --try $P.GPA_MEAN=40.0,$P.GPA_STD=5.0 --try $P.ESTIMATOR=jsd --try "
    "$P.CRITIC=bilinear --try $P.CRITIC=mlp --try $P.MIX_MODE=intra --try $P.KAPPA_INIT=0.2,$P.LEARN_KAPPA=False "
    "--try $P.W_VIS_MI=0.0 --try $P.W_VIS_MI=0.3 --try $P.N_CTX=16,$P.CTX_INIT='\"\"' --folds 1 2 --seeds 1 2 "
    "--workers 2 --beside CoOp KgCoOp -- TRAIN.TRACK_NEW True": Run("--no-run"),
    "python3 scripts/sweep.py KgCoOp --folds 1 2 --seeds 1 2 -- TRAIN.TRACK_NEW True": Run("--no-run"),
    # the tables, from the world runs above
    "python3 scripts/tables.py output/": Run(after="bash scripts/base2new_test.sh world 1"),
    "python3 scripts/tables.py output/ --protocol base2new": Run(after="bash scripts/base2new_test.sh world 1",
                                                                  shows=("World",)),
    "python3 scripts/tables.py output/ --protocol base2new --seeds 1 2 3 --out paper/": Run(
        after="bash scripts/base2new_test.sh world 1", shows=("World",)),
    'python3 scripts/tables.py output/ --protocol fewshot --method "CoOp-M16=CoOp:vit_b16_ep50,vit_b16_ep100,'
    'vit_b16" --method "CoOp-ctx=CoOp:vit_b16_ctxv1"': Run(
        # the world runs here are base-to-new ones: the command line is read, and it says what it lacks
        after="bash scripts/base2new_test.sh world 1", code=2, shows=("no records of protocol fewshot",)),
    "python3 scripts/tables.py output/world/xd": Run(after="bash scripts/dg.sh CoOp", shows=("trained on World",)),
    # the launcher: what it would run, and the state of a protocol (on one dataset and seed: resolving the 11
    # datasets x 3 seeds x trainers takes minutes on a shared CPU, and says nothing more about the command line)
    "python3 scripts/launch.py base2new CoOp --gpus 0,1,2,3": Run("--dry-run", env=ONE_RUN),
    "python3 scripts/launch.py base2new CoOp --backend slurm --partition gpu --gpus-per-run 1": Run("--dry-run", env=ONE_RUN),
    # exit 0 only once every run has finished; here none has started
    "python3 scripts/launch.py base2new CoOp --status": Run(env=ONE_RUN, code=1,
                                                           shows=("0 finished, 2 not started", "next: rerun")),
    "python3 scripts/launch.py base2new CoOp --dry-run": Run(env=ONE_RUN),
    "python3 scripts/launch.py base2new --trainers CoOp MaPLe DualMIPrompt --workers 2": Run("--dry-run", env=ONE_RUN),
    'DATASETS="world world_shapes" python3 scripts/launch.py base2new --trainers CoOp DualMIPrompt --workers 2':
        Run("--dry-run"),
    "python3 scripts/launch.py xd CoOp --backend slurm --partition gpu --gpus-per-run 1 --time 240": Run(
        "--dry-run", env=ONE_RUN),
    # dataset preparation: the check on an empty folder, the downloads from fake archives of the real shapes
    "python -m datasets.prepare --check --root $DATA": Run(data="empty", code=1,
                                                           shows=("missing", "Not prepared yet")),
    "python -m datasets.prepare oxford_pets dtd eurosat --root $DATA": Run(data="fake"),
    # every automated dataset is prepared; ImageNet and Stanford Cars stop at their manual step
    "python -m datasets.prepare all --root $DATA": Run(data="fake", code=1, shows=("needs a manual step",)),
    # tools whose full run is hours on a CPU, or needs ViT-B/16 at full size: the command line starts
    # (its full run is tests/test_benchmark.py's, in a fresh interpreter too)
    "python3 scripts/benchmark.py --quick": Run(help=True),
    # world calibration: one small dataset, one seed, one epoch (its full run is minutes per dataset)
    "python3 scripts/calibrate_world.py": Run("--datasets world_shapes --seeds 1 --shots 2 --epochs 1 --threads 1",
                                              shows=("| world_shapes | KgCoOp |",)),
    "python3 scripts/pretrain_world_clip.py": Run(help=True),
    "python3 scripts/pretrain_world_clip.py --evaluate-only": Run(help=True),
    "python3 scripts/benchmark.py --trainers CoOp DualMIPrompt MaPLe --classes 100 --batch 32 --json step.json":
        Run(help=True),
    "python3 scripts/benchmark.py --trainers CoOp DualMIPrompt --steps 0 --eval-images 1000 --eval-classes 1000":
        Run(help=True),
    "python3 scripts/benchmark.py --trainers CoCoOp --batch 4 --eval-images 100 --eval-batch 100": Run(help=True),
    "python3 scripts/benchmark.py --trainers CoOp KgCoOp IVLP PromptSRC --backbone ViT-B/16 --classes 100 "
    "--batch 32 --steps 3 --warmup 1 --eval-images 200 --eval-classes 100 --eval-batch 100": Run(help=True),
    "ruff check .": Run(),
}

REAL = "needs a real dataset under DATA (python -m datasets.prepare) and the ViT-B/16 weights from the internet"
PROTOCOL = "the whole protocol on the 11 real datasets x 3 seeds (the same scripts run on the world above)"
GPU = "needs a CUDA GPU (scripts/gpu_check.sh runs the GPU checks)"
CURVES = ("reads the tracked runs of two whole sweeps (40 runs each); tests/test_curves.py runs the script in a fresh "
          "process on logs laid out as a sweep lays them out")
CANNOT_RUN = {
    "bash scripts/setup.sh": "installs from PyPI and GitHub; .ci/run runs it before the tests",
    "python3 -m pytest -q": "the test suite itself (.ci/run runs it)",
    "bash scripts/base2new_train.sh oxford_pets 1": REAL,
    "bash scripts/base2new_test.sh oxford_pets 1": REAL,
    "bash scripts/base2new_train.sh oxford_pets 1 CoOp vit_b16_ctxv1": REAL,
    "bash scripts/base2new_train.sh imagenet 1": REAL,
    "bash scripts/base2new_test.sh imagenet 1": REAL,
    "bash scripts/base2new_train.sh imagenet 1 MaPLe": REAL,
    "bash scripts/base2new_test.sh imagenet 1 MaPLe": REAL,
    "bash scripts/base2new_train.sh imagenet 1 CoCoOp": REAL,
    "bash scripts/base2new_test.sh imagenet 1 CoCoOp": REAL,
    "bash scripts/base2new_train.sh oxford_pets 1 DualMIPrompt vit_b16_c4_ep200_batch32_ctxv1 -- "
    "TRAINER.DUALMIPROMPT.ESTIMATOR dv": REAL,
    "python train.py --root $DATA --seed 1 --trainer DualMIPrompt --dataset-config-file "
    "configs/datasets/oxford_pets.yaml --config-file configs/trainers/DualMIPrompt/vit_b16_c4_ep200_batch32_ctxv1.yaml"
    " --output-dir output/pets DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base": REAL,
    "python3 train.py --root $DATA --seed 1 --trainer CoOp --dataset-config-file configs/datasets/oxford_pets.yaml "
    "--config-file configs/trainers/CoOp/vit_b16_ctxv1.yaml --output-dir output/pets_coop DATASET.NUM_SHOTS 16": REAL,
    "python train.py --trainer MaPLe --root $DATA --seed 1 --dataset-config-file configs/datasets/imagenet.yaml "
    "--config-file configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml --output-dir output/maple_imagenet "
    "DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base": REAL,
    "DATA=/path/to/datasets python3 scripts/sweep.py CoOp --grid OPTIM.LR=0.002,0.004 --datasets oxford_pets dtd":
        REAL,
    "PYTHONPATH=/path/to/plugins TRAINER_PLUGINS=my_trainers bash scripts/base2new_train.sh world 1 MyMethod":
        "an example: /path/to/plugins and my_trainers stand for the user's own package "
        "(tests/test_registry.py runs a plugin trainer through the scripts)",
    "python3 scripts/calibrate_world.py --clip /tmp/wide/world_clip.pt": "needs a world CLIP pretrained with a wider "
    "text side first (scripts/pretrain_world_clip.py, over half an hour on 2 cores); the tool itself runs above",
    "bash scripts/base2new.sh DualMIPrompt": PROTOCOL,
    "python3 scripts/curves.py --runs CoOp=$R/CoOp/default --runs KgCoOp=$R/KgCoOp/default --out forgetting": CURVES,
    "python3 scripts/curves.py --runs CoOp=$R/CoOp/default --keys loss_ce track_new_cos --epochs 0 10 50 --out more":
        CURVES,
    "python3 scripts/curves.py --runs CoOp=$R/CoOp/default --runs KgCoOp=$R/KgCoOp/default --runs "
    "DualMIPrompt=$R/DualMIPrompt/default --keys track_new_acc track_base_acc track_new_cos --out forgetting_curves":
        CURVES,
    "python3 scripts/curves.py --runs DualMIPrompt=$R/DualMIPrompt/default --keys cos_soft_hand mi_bound_text "
    "mi_ceiling_text kappa_text grad_ctx_ce grad_ctx_text_mi grad_ctx_vis_mi mi_bound_vis kappa_vis --out terms":
        CURVES,
    'DATASETS="imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat '
    'ucf101"': "the ablation loop: every ablation config x the 11 real datasets x 3 seeds",
    "bash scripts/base2new.sh CoOp": PROTOCOL,
    "bash scripts/base2new.sh ZeroshotCLIP": PROTOCOL,
    "bash scripts/xd.sh CoOp && bash scripts/dg.sh CoOp": PROTOCOL,
    'SHOTS_LIST="1 2 4" bash scripts/fewshot.sh CoOp': PROTOCOL,
    'SHOTS_LIST="1 2 4" bash scripts/fewshot.sh CoOp -- OPTIM.MAX_EPOCH 20': PROTOCOL,
    'DATASETS="dtd eurosat" SEEDS="1" bash scripts/base2new.sh DualMIPrompt': REAL,
    "python3 scripts/benchmark.py --device cuda --prec amp bf16 --classes 1000 --batch 32": GPU,
    "python3 scripts/benchmark.py --device cuda --prec fp16 --backbone ViT-B/16 --classes 1000 --batch 32 "
    "--trainers CoOp DualMIPrompt": GPU,
    "python3 scripts/benchmark.py --device cuda --prec amp --backbone ViT-B/16 --classes 1000 --batch 32 "
    "--trainers CoOp DualMIPrompt": GPU,
    "python3 scripts/benchmark.py --device cuda --prec bf16 --backbone ViT-B/16 --classes 1000 --batch 32 "
    "--trainers CoOp DualMIPrompt --no-memory": GPU,
    "python3 scripts/benchmark.py --device cuda --prec fp16 amp bf16 --backbone ViT-B/16 --classes 100 --batch 4 "
    "--trainers CoCoOp --no-memory": GPU,
}


def key(text):
    """A command as the tables above spell it: words separated by single spaces (loops keep their lines)."""
    return "\n".join(" ".join(line.split()) for line in text.split("\n"))


def loop_key(command):
    return key(command.text).split("\n")[0] if "\n" in command.text else key(command.text)


def entry(command):
    name = loop_key(command)
    return RUNS.get(name), CANNOT_RUN.get(name)


def test_every_command_is_run_or_listed():
    assert len(COMMANDS) > 50  # the collection found the documents' blocks
    unlisted = [f"{command.where}: {loop_key(command)}" for command in COMMANDS if entry(command) == (None, None)]
    both = [f"{command.where}: {loop_key(command)}" for command in COMMANDS if None not in entry(command)]
    assert not unlisted, ("commands in the documents that are neither run nor listed in CANNOT_RUN with a reason "
                          "(tests/test_doc_commands.py):\n" + "\n".join(unlisted))
    assert not both, "run and listed as impossible at once:\n" + "\n".join(both)
    shown = {loop_key(command) for command in COMMANDS}
    stale = sorted((set(RUNS) | set(CANNOT_RUN)) - shown)
    assert not stale, "entries for commands no document shows any more:\n" + "\n".join(stale)


# ----- running them -----
@pytest.fixture(scope="module")
def places(tmp_path_factory, world_env):
    """DATA and OUTPUT for the commands: the session's generated world and its runs (shared with the world's
    integration tests, so that a run made here is skipped there as finished, and the other way round), an empty
    datasets folder, and a scratch folder."""
    scratch = tmp_path_factory.mktemp("doc_commands")
    return {"world": world_env["DATA"], "OUTPUT": world_env["OUTPUT"], "empty": str(scratch / "empty"),
            "fake": str(scratch / "prepared"), "scratch": str(scratch)}


@pytest.fixture(scope="module")
def fake_world():
    from archive_server import ArchiveServer
    from fake_sources import FakeWorld

    with ArchiveServer() as server:
        yield FakeWorld(server)


def fake_sources(world):
    """The source table with each automated dataset's downloads served by ``world``; manual ones as they are."""
    from datasets.prepare.sources import SOURCES

    return {name: recipe if recipe.manual else world.recipe(name) for name, recipe in SOURCES.items()}


def words_for_here(words, setup, places):
    """The command's words with the paths it writes moved out of the repository: its output folder (``output/``,
    or the OUTPUT its block sets) to OUTPUT, ``paper/`` to the scratch folder."""
    document_output = next((match.group(1) for line in setup for match in [re.search(r"\bOUTPUT=(\S+)", line)]
                            if match), "output")
    moved = []
    for word in words:
        for old, new in ((document_output, places["OUTPUT"]), ("paper", os.path.join(places["scratch"], "paper"))):
            if word == old or word.startswith(old.rstrip("/") + "/"):
                word = new + word[len(old.rstrip("/")):]
                break
        moved.append(word)
    return moved


def with_appended(text, append):
    if not append:
        return text
    words = shlex.split(text, posix=False)
    if "--" in words and not append.startswith("--"):
        return text + " " + append
    if "--" in words:
        cut = words.index("--")
        return " ".join(words[:cut] + [append] + words[cut:])
    return text + " " + append


def help_command(text):
    words = shlex.split(text)
    program = next(index for index, word in enumerate(words) if word.endswith((".py", ".sh")))
    return " ".join(words[: program + 1] + ["--help"])


RESULTS = {}


def run_doc_command(command, places, fake_world):
    """Runs ``command`` (its ``after`` first) once per session; returns ``(command line run, exit status, output)``."""
    name = loop_key(command)
    if name in RESULTS:
        return RESULTS[name]
    how = RUNS[name]
    if how.after:
        run_doc_command(next(c for c in COMMANDS if loop_key(c) == how.after), places, fake_world)
    env = {key_: value for key_, value in os.environ.items()
           if key_ not in ("DATA", "OUTPUT", "PYTHONPATH", "SHOTS", "SEEDS", "DATASETS", "XD_SOURCE")}
    env.update({"DATA": places[how.data], "OUTPUT": places["OUTPUT"], "OUTDATED_IGNORE": "1",
                "DUALMI_ENV_INFO": "0", **how.env})
    setup = [line for line in command.setup if not re.match(r"(export )?(DATA|OUTPUT)=\S+$", line)]
    setup = [re.sub(r" ?\b(DATA|OUTPUT)=\S+", "", line) for line in setup]  # ours, not the document's
    text = help_command(command.text) if how.help else with_appended(command.text, how.append)
    words = words_for_here(shlex.split(text, posix=False), command.setup, places)
    if how.data == "fake":
        from fake_sources import prepare_in_subprocess

        argv = [places["fake"] if word == "$DATA" else word for word in shlex.split(text)[3:]]
        done = prepare_in_subprocess(fake_world, fake_sources(fake_world), argv, places["scratch"], env=env)
        line = "python -m datasets.prepare " + " ".join(argv) + "  (fake sources)"
    else:
        line = "\n".join(setup + [" ".join(words)])
        done = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    RESULTS[name] = (line, done.returncode, done.stdout + done.stderr)
    return RESULTS[name]


RUNNABLE = [command for command in COMMANDS if loop_key(command) in RUNS]
RUNNABLE = list({loop_key(command): command for command in reversed(RUNNABLE)}.values())[::-1]  # first place shown


@pytest.mark.parametrize("command", RUNNABLE, ids=[command.where for command in RUNNABLE])
def test_the_command_runs(command, places, fake_world):
    how = RUNS[loop_key(command)]
    line, code, output = run_doc_command(command, places, fake_world)
    assert code == how.code, f"{line}\nexit {code}, expected {how.code}:\n{output[-4000:]}"
    assert "Traceback" not in output, f"{line}\n{output[-4000:]}"
    for text in how.shows:
        assert text in output, f"{line}: {text!r} not in\n{output[-4000:]}"
    for path in how.paths:
        assert os.path.isfile(os.path.join(places["OUTPUT"], path)), f"{line} left no {path}"


def test_the_collection_reads_blocks_as_a_shell_does():
    by_text = {key(command.text): command for command in COMMANDS}
    # a continued line is one command; a trailing comment is not part of it; a quoted "#"-free value is kept
    assert "python3 scripts/suite.py --quick" in by_text
    assert 'SHOTS_LIST="1 2 4" bash scripts/fewshot.sh CoOp' in by_text
    assert any(text.startswith("python train.py --root $DATA") and text.endswith("DATASET.SUBSAMPLE_CLASSES base")
               for text in by_text)
    # assignment lines are kept as the setup of the commands that follow them in their block
    sweep = next(command for command in COMMANDS if "$K.W_ALIGN" in command.text)
    assert sweep.setup == ("K=TRAINER.DUALMIPROMPT",)
    # a loop is one command
    assert any(command.text.startswith("DATASETS=") or command.text.startswith("for ") for command in COMMANDS
               if "\n" in command.text)
