"""Mistakes a user can make end in one line saying what is wrong and how to fix it (exit status 2), never in a
traceback: a decompression-bomb image, a config file that is not plain YAML, a seed numpy cannot take, an output
folder that cannot be written, a context longer than CLIP's 77 tokens, a warm-up as long as the run. A killed run
keeps its log."""
import os
import struct
import subprocess
import sys
import zlib

import pytest
from fixtures import REPO, pets_setup, run_train, tiny_clip, tiny_overrides

pytestmark = pytest.mark.integration

DATASET_YAML = "configs/datasets/oxford_pets.yaml"
BASE = ["--dataset-config-file", DATASET_YAML, "--trainer", "CoOp"]


def parse(argv):
    import train

    return train.setup_cfg(train.build_parser().parse_args(argv))


def refused(argv, *expected):
    """setup_cfg refuses ``argv`` with one short line holding every ``expected`` text; the message."""
    from trainers.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse(argv)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    for text in expected:
        assert text in message, message
    return message


def assert_one_line_error(result, *expected):
    """The run ended with status 2 and its stderr ends with one line "error: ..." (warnings may come before it)."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and len(lines[-1]) < 600, result.stderr[-3000:]
    for text in expected:
        assert text in lines[-1], lines[-1]
    return lines[-1]


def png_declaring(width, height):
    """A PNG of a few bytes whose header declares ``width`` x ``height`` pixels (no pixel data)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


# ----- images -----
def test_decompression_bombs_are_image_read_errors_naming_the_file(tmp_path):
    from common.images import ImageReadError, read_rgb

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(100000, 100000))  # over twice PIL's limit: DecompressionBombError
    assert len(bomb.read_bytes()) == 57
    warned = tmp_path / "warned.png"
    warned.write_bytes(png_declaring(10000, 10000))  # between the limit and twice it: DecompressionBombWarning
    for path in (bomb, warned):
        with pytest.raises(ImageReadError, match=f"{path.name}: Image size .* decompression bomb"):
            read_rgb(str(path))


@pytest.mark.parametrize("workers", [0, 1])
def test_a_decompression_bomb_in_a_dataset_ends_the_run_with_one_line(tmp_path, workers):
    """With DataLoader workers, the worker's traceback that torch puts into the message is left out too."""
    root, clip_file = pets_setup(tmp_path)
    bomb = root / "oxford_pets" / "images" / "beagle_train_0.jpg"
    bomb.write_bytes(png_declaring(100000, 100000))
    result = run_train(["--root", root, "--seed", 1, *BASE, "--output-dir", tmp_path / "out",
                        *tiny_overrides(clip_file, epochs=1), "DATALOADER.NUM_WORKERS", workers], check=False)
    assert_one_line_error(result, f"Cannot read image {bomb}", "decompression bomb")


# ----- config files -----
CONFIG_CASES = {
    "syntax": ("bad.yaml", "OPTIM:\n  LR: [0.1\n",
               ["bad.yaml (--", "line 3, column 1: invalid YAML", "expected ',' or ']'"]),
    "python tag": ("tag.yaml", "OPTIM: !!python/object/apply:os.system ['touch {marker}']\n",
                   ["tag.yaml (--", "line 1, column 8: the YAML tag !!python/object/apply:os.system is refused",
                    "remove the tag"]),
    "custom tag": ("custom.yaml", "OPTIM:\n  LR: !foo 0.1\n",
                   ["custom.yaml (--", "line 2, column 7: the YAML tag !foo is refused"]),
    "python file": ("config.py", "import os\nos.system('touch {marker}')\nOPTIM = dict(LR=0.5)\n",
                    ["config.py is Python code, which is never run as a config", ".yaml"]),
    "not yaml": ("config.json", '{"OPTIM": {"LR": 0.5}}', ["config.json is not a YAML file"]),
    "binary": ("binary.yaml", b"\xff\xfe\x00\x01", ["binary.yaml", "not UTF-8 text"]),
    "number key": ("keys.yaml", "OPTIM:\n  1: 2\n", ["keys.yaml", "every key must be a name"]),
    "value for a group": ("group.yaml", "OPTIM: 5\n", ["group.yaml", "OPTIM is a group of keys, not a single value"]),
    "group for a value": ("value.yaml", "OPTIM:\n  LR:\n    A: 1\n    B: 2\n",
                          ["value.yaml", "OPTIM.LR takes a single value, not a group"]),
}


def write_config(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content.replace("{marker}", str(tmp_path / "executed")))
    return path


@pytest.mark.parametrize("flag", ["--config-file", "--dataset-config-file"])
@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_files_that_are_not_plain_yaml_are_refused_in_one_line(tmp_path, case, flag):
    name, content, expected = CONFIG_CASES[case]
    path = write_config(tmp_path, name, content)
    argv = ["--trainer", "CoOp", flag, str(path)] + (["DATASET.NAME", "OxfordPets"] if flag != "--config-file" else
                                                     ["--dataset-config-file", DATASET_YAML])
    refused(argv, flag, *expected)
    assert not (tmp_path / "executed").exists()


def test_a_yaml_error_in_a_base_file_names_the_base(tmp_path):
    (tmp_path / "base.yaml").write_text("OPTIM:\n  LR: !!python/name:os.system\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base.yaml\nOPTIM:\n  MAX_EPOCH: 3\n")
    refused(BASE + ["--config-file", str(child)], "child.yaml (--config-file): ", "base.yaml, line 2, column 7",
            "!!python/name:os.system")


def test_a_group_given_one_value_on_the_command_line_is_one_line():
    refused(BASE + ["OPTIM", "5"], "OPTIM is a group of keys")


def test_config_errors_reach_the_command_line_as_one_line(tmp_path):
    for case in ("python tag", "python file"):
        name, content, expected = CONFIG_CASES[case]
        path = write_config(tmp_path, name, content)
        result = run_train(["--trainer", "CoOp", "--dataset-config-file", DATASET_YAML, "--config-file", path,
                            "--output-dir", tmp_path / "out"], check=False)
        assert_one_line_error(result, *expected)
    assert not (tmp_path / "executed").exists()


# ----- seed -----
def test_seeds_numpy_cannot_take_are_refused_and_negative_ones_are_unseeded():
    for seed in (2**32, 10**30):
        refused(BASE + ["--seed", str(seed)], f"SEED is {seed}", "4294967295", "--seed")
    refused(BASE + ["SEED", str(2**32)], "SEED is 4294967296")
    assert parse(BASE + ["--seed", str(2**32 - 1)]).SEED == 2**32 - 1
    for seed in (-1, -7, -(10**30)):  # negative: an unseeded run, as --seed's help says
        assert parse(BASE + ["--seed", str(seed)]).SEED == seed


def test_a_seed_too_large_reaches_the_command_line_as_one_line(tmp_path):
    result = run_train([*BASE, "--seed", 2**32, "--output-dir", tmp_path / "out"], check=False)
    assert_one_line_error(result, "SEED is 4294967296")


# ----- output folder -----
def test_an_output_dir_that_is_a_file_or_inside_one_is_one_line(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    result = run_train([*BASE, "--output-dir", a_file], check=False)
    assert_one_line_error(result, f"The output folder {a_file} (--output-dir) is a file")
    result = run_train([*BASE, "--output-dir", a_file / "run"], check=False)
    assert_one_line_error(result, f"Cannot create the output folder {a_file / 'run'}", "Not a directory")
    assert a_file.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_dir_is_one_line(tmp_path):
    parent = tmp_path / "read_only"
    (parent / "existing").mkdir(parents=True)
    parent.chmod(0o555)
    try:
        for out, expected in ((parent / "new", "Cannot create the output folder"), (parent / "existing", "read-only")):
            assert_one_line_error(run_train([*BASE, "--output-dir", out], check=False), expected, "--output-dir")
    finally:
        parent.chmod(0o755)


def test_read_only_folders_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    """The check itself, for runs as root (which writes into read-only folders): os.access answers for the file
    system, so a read-only mount is refused for root too."""
    import train
    from trainers.config import ConfigError

    out = tmp_path / "out"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(out) else real_access(path, mode))
    with pytest.raises(ConfigError, match=f"The folder {out} is read-only"):
        train.check_output_dir(str(out))
    train.check_output_dir(str(tmp_path / "fine"))


# ----- context length -----
def test_n_ctx_must_fit_clips_77_tokens_in_every_trainer_node():
    from trainers.config import get_cfg_default

    cfg = get_cfg_default()
    keys = [f"TRAINER.{name}.{leaf}" for name, node in cfg.TRAINER.items() if hasattr(node, "keys")
            for leaf in ("N_CTX", "N_CTX_TEXT") if leaf in node]
    assert {"TRAINER.COOP.N_CTX", "TRAINER.COCOOP.N_CTX", "TRAINER.KGCOOP.N_CTX", "TRAINER.MAPLE.N_CTX",
            "TRAINER.DUALMIPROMPT.N_CTX", "TRAINER.IVLP.N_CTX_TEXT", "TRAINER.PROMPTSRC.N_CTX_TEXT"} <= set(keys)
    for key in keys:
        for value in (100000, 74, 0):
            refused(BASE + [key, str(value)], f"{key} is {value}", "from 1 to 73", "77-token")
        assert parse(BASE + [key, "73"])


def test_a_prompt_longer_than_77_tokens_is_one_line():
    from trainers.config import ConfigError
    from trainers.prompts import ContextPrompts

    clip_model = tiny_clip()
    with pytest.raises(ConfigError) as caught:
        ContextPrompts(clip_model, ["cat", "american pit bull terrier"], n_ctx=73)
    message = str(caught.value)
    assert "'american pit bull terrier' needs" in message and "N_CTX 73" in message and len(message) < 300
    with pytest.raises(ConfigError, match="CTX_INIT has 90 tokens"):
        ContextPrompts(clip_model, ["cat"], ctx_init=" ".join(["photo"] * 90))
    assert ContextPrompts(clip_model, ["cat"], n_ctx=73).tokens.shape == (1, 77)


def test_a_context_that_leaves_no_room_for_a_class_name_is_one_line_on_the_command_line(tmp_path):
    root, clip_file = pets_setup(tmp_path)
    result = run_train(["--root", root, *BASE, "--output-dir", tmp_path / "out", *tiny_overrides(clip_file),
                        "TRAINER.COOP.N_CTX", 73], check=False)
    assert_one_line_error(result, "The prompt of class 'abyssinian' needs 79 tokens")


# ----- warm-up -----
def test_a_warm_up_as_long_as_the_run_is_refused():
    for warmup, epochs in ((5, 3), (3, 3), (1, 1)):
        refused(BASE + ["OPTIM.WARMUP_EPOCH", str(warmup), "OPTIM.MAX_EPOCH", str(epochs)],
                f"OPTIM.WARMUP_EPOCH is {warmup} and OPTIM.MAX_EPOCH is {epochs}", "OPTIM.WARMUP_EPOCH 0")
    for warmup, epochs in ((2, 3), (0, 1), (-1, 1)):
        cfg = parse(BASE + ["OPTIM.WARMUP_EPOCH", str(warmup), "OPTIM.MAX_EPOCH", str(epochs)])
        assert (cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.MAX_EPOCH) == (warmup, epochs)
    one_epoch = BASE + ["--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", "OPTIM.MAX_EPOCH", "1"]
    refused(one_epoch, "OPTIM.WARMUP_EPOCH is 1 and OPTIM.MAX_EPOCH is 1")
    assert parse(one_epoch + ["OPTIM.WARMUP_EPOCH", "0"]).OPTIM.WARMUP_EPOCH == 0
    for flag in ("--eval-only", "--no-train"):  # no training, no schedule: nothing to refuse
        assert parse([flag, *one_epoch]).OPTIM.WARMUP_EPOCH == 1


# ----- the log of a killed run -----
KILLED_RUN = """
import os, signal, sys
import train

class KilledWhileTraining:
    def train(self):
        print("the last line before the kill")
        os.kill(os.getpid(), signal.SIGKILL)

train.build_trainer = lambda cfg: KilledWhileTraining()
train.main(train.build_parser().parse_args(sys.argv[1:]))
"""


def test_a_killed_run_keeps_every_line_it_logged(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUTDATED_IGNORE": "1", "DUALMI_ENV_INFO": "0"}
    result = subprocess.run([sys.executable, "-c", KILLED_RUN, *BASE, "--seed", "1", "--output-dir", str(out)],
                            cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == -9, result.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "** Config **" in log and log.endswith("the last line before the kill\n")
