"""``_BASE_`` in config yamls: a file inherits another and lists only the keys it changes."""
import pytest

from trainers.config import ConfigError, load_yaml_with_bases


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_file_overrides_its_base_key_by_key_through_a_chain(tmp_path):
    write(tmp_path, "root.yaml", "OPTIM:\n  LR: 0.002\n  MAX_EPOCH: 200\nTRAINER:\n  X:\n    A: 1\n    B: 2\n")
    write(tmp_path, "mid.yaml", "_BASE_: root.yaml\nOPTIM:\n  MAX_EPOCH: 50\n")
    leaf = write(tmp_path, "sub/leaf.yaml", "_BASE_: ../mid.yaml\nTRAINER:\n  X:\n    B: 3\n")
    assert load_yaml_with_bases(str(leaf)) == {"OPTIM": {"LR": 0.002, "MAX_EPOCH": 50},
                                               "TRAINER": {"X": {"A": 1, "B": 3}}}


def test_a_file_without_base_is_read_as_it_is(tmp_path):
    path = write(tmp_path, "plain.yaml", "A: 1\n")
    assert load_yaml_with_bases(str(path)) == {"A": 1}
    assert load_yaml_with_bases(str(write(tmp_path, "empty.yaml", ""))) == {}


def test_a_missing_base_names_the_file_that_asks_for_it(tmp_path):
    path = write(tmp_path, "child.yaml", "_BASE_: nowhere.yaml\nA: 1\n")
    with pytest.raises(ConfigError, match=r"child\.yaml names _BASE_ .*nowhere\.yaml, which does not exist"):
        load_yaml_with_bases(str(path))


@pytest.mark.parametrize("files", [
    {"a.yaml": "_BASE_: a.yaml\n"},
    {"a.yaml": "_BASE_: b.yaml\n", "b.yaml": "_BASE_: c.yaml\n", "c.yaml": "_BASE_: a.yaml\n"},
])
def test_a_circular_chain_is_refused_with_the_cycle(tmp_path, files):
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(ConfigError, match="inherits from itself through _BASE_: .*a.yaml"):
        load_yaml_with_bases(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize("text, message", [
    ("_BASE_: 3\n", "must be the name of a .yaml file"),
    ("_BASE_: other.txt\n", "must be the name of a .yaml file"),
    ("- a\n- b\n", "must hold KEY: value pairs"),
    ("A: [1, 2\n", "cannot read config file"),
])
def test_malformed_files_get_one_message(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_yaml_with_bases(str(write(tmp_path, "bad.yaml", text)))


def test_a_yaml_tag_that_would_build_objects_is_refused(tmp_path):
    path = write(tmp_path, "tag.yaml", "A: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_yaml_with_bases(str(path))
