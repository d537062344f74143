"""``python -m datasets.prepare`` end to end, with real dataset modules (Dassl) and fake archives shaped as the
source table says, served on 127.0.0.1 (``fake_sources``); Google Drive is replaced by an in-memory downloader.
The tests of the entry point itself run it in a fresh interpreter; the others call ``main`` here, for speed."""
import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("dassl")

from archive_server import ArchiveServer, md5  # noqa: E402
from fake_sources import CLASSES, REPO, FakeWorld, prepare_in_subprocess  # noqa: E402
from test_prepare_ilsvrc import LEAF_IDS, expected_val_layout, fake_devkit, fake_train_tar, fake_val_tar  # noqa: E402

from datasets.imagenet import ImageNet  # noqa: E402
from datasets.prepare.cli import main  # noqa: E402
from datasets.prepare.layout import CONFIG_DIR, dataset_classes, layout_attributes  # noqa: E402
from datasets.prepare.sources import SOURCES  # noqa: E402

AUTOMATED = sorted(name for name, recipe in SOURCES.items() if not recipe.manual)


@pytest.fixture
def world():
    with ArchiveServer() as server:
        yield FakeWorld(server)


# ----- the entry point, in a fresh interpreter as a user runs it -----
def test_the_commands_on_an_empty_root_report_what_is_missing_without_a_traceback(tmp_path):
    root = tmp_path / "empty"
    check = subprocess.run([sys.executable, "-m", "datasets.prepare", "--check", "--root", str(root)], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert check.returncode == 1, check.stderr
    assert "Traceback" not in check.stderr
    assert table_row(check.stdout, "oxford_pets").split()[:2] == ["oxford_pets", "missing"]
    assert "Not prepared yet: python -m datasets.prepare caltech101 dtd" in check.stdout
    assert not root.exists()  # --check creates nothing


def test_the_entry_point_prepares_from_the_fake_archives(tmp_path, world):
    names = ["oxford_pets", "dtd", "eurosat"]
    sources = {name: world.recipe(name) for name in names}
    root = tmp_path / "data"
    done = prepare_in_subprocess(world, sources, [*names, "--root", str(root), "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in names:
        assert f"{world.images[name]} / {world.images[name]}" in table_row(done.stdout, name)
    check = prepare_in_subprocess(world, sources, ["--check", *names, "--root", str(root)], tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert [table_row(check.stdout, name).split()[1] for name in names] == ["ok"] * 3


def run(root, world, sources, *args):
    logs = []
    code = main([*args, "--root", str(root), "--no-progress"], gdrive=world.gdrive, sources=sources,
                log=logs.append)
    return code, "\n".join(logs)


def table_row(output, name):
    return next(line for line in output.splitlines() if line.startswith(name + " "))


# ----- the table -----
def test_every_dataset_config_has_a_source_entry_that_names_its_origin():
    everything = dataset_classes(include_generated=True)
    configs = {os.path.splitext(name)[0] for name in os.listdir(CONFIG_DIR) if name.endswith(".yaml")}
    assert configs == set(everything)
    downloaded = {name for name, cls in everything.items() if not cls.generated}
    assert set(SOURCES) == downloaded == set(CLASSES)
    assert "world" in configs - downloaded
    for name, recipe in SOURCES.items():
        assert recipe.downloads or recipe.manual, name
        for download in recipe.downloads:
            assert download.origin and (download.sources or recipe.manual), (name, download.name)
            assert download.md5 is None or re.fullmatch(r"[0-9a-f]{32}", download.md5), download.name
            assert download.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", download.sha256), download.name
            assert bool(download.places) != bool(download.target) or recipe.custom, download.name
            for place in download.places:  # every target names only attributes the module has
                for inner in (place,) + place.unpack:
                    inner.target.format(**layout_attributes(CLASSES[name]))
        if recipe.expected_images is not None:
            assert recipe.expected_origin, name


# ----- every automated dataset, from fake archives shaped as the table says -----
@pytest.mark.parametrize("name", AUTOMATED)
def test_each_dataset_is_laid_out_as_its_module_reads_it(tmp_path, world, name):
    sources = {name: world.recipe(name)}
    code, output = run(tmp_path / "data", world, sources, name)
    assert code == 0, output
    splits = CLASSES[name].layout_at(str(tmp_path / "data")).read_items()  # the reader training uses
    items = {item.impath for split in splits.values() if split for item in split}
    assert len(items) == world.images[name]
    assert f"{world.images[name]} / {world.images[name]}" in table_row(output, name)
    folder = tmp_path / "data" / CLASSES[name].dataset_dir
    assert not os.listdir(folder / ".prepare" / "staging")
    assert not any("outside.txt" in names for _, _, names in os.walk(folder))


def test_fgvc_aircraft_keeps_only_the_data_folder(tmp_path, world):
    sources = {"fgvc_aircraft": world.recipe("fgvc_aircraft")}
    assert run(tmp_path, world, sources, "fgvc_aircraft")[0] == 0
    folder = tmp_path / "fgvc_aircraft"
    assert sorted(name for name in os.listdir(folder) if not name.startswith(".")) == [
        "README.txt", "images", "images_variant_test.txt", "images_variant_train.txt", "images_variant_val.txt",
        "variants.txt",
    ]
    splits = CLASSES["fgvc_aircraft"].layout_at(str(tmp_path)).read_items()
    assert [(os.path.basename(item.impath), item.label, item.classname) for item in splits["val"]] == [
        ("1000.jpg", 0, "707-320"), ("1100.jpg", 1, "A300B4"),
    ]


# ----- idempotence, --check, repair -----
def test_a_prepared_dataset_is_skipped_checked_and_repaired(tmp_path, world):
    sources = {"dtd": world.recipe("dtd")}
    root = tmp_path / "data"
    assert run(root, world, sources, "dtd")[0] == 0
    requests, gdrive_calls = len(world.server.requests), len(world.gdrive_calls)

    code, output = run(root, world, sources, "dtd")
    assert code == 0 and "dtd: already prepared (12 images), skipped" in output
    assert (len(world.server.requests), len(world.gdrive_calls)) == (requests, gdrive_calls)

    code, output = run(root, world, sources, "--check", "dtd")
    assert code == 0
    assert table_row(output, "dtd").split() == ["dtd", "ok", "12", "/", "12", "-"]

    image = root / "dtd" / "images" / "beta" / "test_1.jpg"
    os.remove(image)
    code, output = run(root, world, sources, "--check", "dtd")
    assert code == 1
    assert table_row(output, "dtd").split()[:5] == ["dtd", "incomplete", "11", "/", "12"]
    assert "1 of the 12 images listed by" in output and str(image) in output

    # The archive is still here and verified: --force places it again without downloading anything.
    code, output = run(root, world, sources, "--force", "dtd")
    assert code == 0 and image.read_bytes() == b"beta/test_1.jpg"
    assert (len(world.server.requests), len(world.gdrive_calls)) == (requests, gdrive_calls)

    os.remove(root / "dtd" / CLASSES["dtd"].split_file)
    code, output = run(root, world, sources, "--check", "dtd")
    assert code == 1 and "incomplete" in table_row(output, "dtd") and CLASSES["dtd"].split_file in output
    assert run(root, world, sources, "dtd")[0] == 0  # put back from the verified download, nothing fetched
    assert (root / "dtd" / CLASSES["dtd"].split_file).is_file()
    assert (len(world.server.requests), len(world.gdrive_calls)) == (requests, gdrive_calls)


def test_check_reports_a_missing_dataset_and_a_broken_split_file(tmp_path, world):
    sources = {"dtd": world.recipe("dtd"), "eurosat": world.recipe("eurosat")}
    root = tmp_path / "data"
    assert run(root, world, sources, "eurosat")[0] == 0
    (root / "eurosat" / CLASSES["eurosat"].split_file).write_text("{not json")
    code, output = run(root, world, sources, "--check", "dtd", "eurosat")
    assert code == 1
    assert table_row(output, "dtd").split()[:2] == ["dtd", "missing"]
    assert "not valid JSON" in output
    assert "Not prepared yet: python -m datasets.prepare dtd" in output
    assert not (root / "dtd").exists()  # --check downloads and creates nothing
    assert len(world.server.requests) == 1


def test_delete_archives_removes_them_once_placed(tmp_path, world):
    sources = {"dtd": world.recipe("dtd")}
    root = tmp_path / "data"
    assert run(root, world, sources, "--delete-archives", "dtd")[0] == 0
    assert not (root / "downloads" / "dtd" / "dtd-r1.0.1.tar.gz").exists()
    assert run(root, world, sources, "dtd")[0] == 0


# ----- manual datasets -----
def test_stanford_cars_prints_the_steps_then_verifies_what_the_user_put_in_place(tmp_path, world):
    sources = {"stanford_cars": world.recipe("stanford_cars")}
    root = tmp_path / "data"
    code, output = run(root, world, sources, "stanford_cars")
    assert code == 1
    folder = root / "stanford_cars"
    assert "needs a manual step" in output and f"{folder}/cars_train/00001.jpg" in output
    split = json.loads((folder / CLASSES["stanford_cars"].split_file).read_text())  # fetched by its file id
    for entries in split.values():
        for relative, _, _ in entries:
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(b"car")
    code, output = run(root, world, sources, "stanford_cars")
    assert code == 0 and "12 / 12" in table_row(output, "stanford_cars")


def test_imagenet_from_the_official_archives_put_in_place_by_the_user(tmp_path, world):
    recipe = SOURCES["imagenet"]
    data = {download.name: payload
            for download, payload in zip(recipe.downloads, (fake_train_tar(), fake_val_tar(), fake_devkit()))}
    fakes = tuple(dataclasses.replace(download, md5=md5(data[download.name])) for download in recipe.downloads)
    images = len(LEAF_IDS) * 2 + len(expected_val_layout())
    sources = {"imagenet": dataclasses.replace(recipe, downloads=fakes, expected_images=images)}
    classnames = "".join(f"{wnid} class {wnid}\n" for wnid in LEAF_IDS.values())
    world.gdrive_files[ImageNet.classnames_file_id] = classnames.encode()
    root = tmp_path / "data"

    code, output = run(root, world, sources, "imagenet")
    assert code == 1 and "https://image-net.org" in output and "ILSVRC2012_img_val.tar" in output

    folder = root / "imagenet"
    for download in fakes:
        (folder / download.name).write_bytes(data[download.name])
    code, output = run(root, world, sources, "imagenet")
    assert code == 0, output
    val_dir = folder / "images" / "val"
    assert {f"{wnid}/{name}" for wnid in os.listdir(val_dir) for name in os.listdir(val_dir / wnid)} == \
        expected_val_layout()
    splits = ImageNet.layout_at(str(root)).read_items()
    assert len(splits["train"]) == len(LEAF_IDS) * 2 and len(splits["test"]) == len(expected_val_layout())

    wrong = dataclasses.replace(fakes[1], md5="0" * 32)  # a corrupt archive is refused, not used
    broken = {"imagenet": dataclasses.replace(sources["imagenet"], downloads=(fakes[0], wrong, fakes[2]))}
    for name in os.listdir(val_dir):
        os.rename(val_dir / name, tmp_path / name)
    code, output = run(root, world, broken, "imagenet")
    assert code == 1 and "does not match" in output


def test_unknown_names_get_suggestions(tmp_path, world, capsys):
    with pytest.raises(SystemExit):
        run(tmp_path, world, SOURCES, "oxford_pet")
    assert "Did you mean oxford_pets" in capsys.readouterr().err


def test_check_points_at_unsorted_imagenet_validation_images(tmp_path, world):
    folder = tmp_path / "imagenet"
    for wnid in LEAF_IDS.values():
        (folder / "images" / "train" / wnid).mkdir(parents=True)
        (folder / "images" / "train" / wnid / "a.JPEG").write_bytes(b"x")
    (folder / "images" / "val").mkdir()
    (folder / "images" / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"x")
    (folder / "classnames.txt").write_text("".join(f"{wnid} class {wnid}\n" for wnid in LEAF_IDS.values()))
    code, output = run(tmp_path, world, SOURCES, "--check", "imagenet")
    assert code == 1
    assert table_row(output, "imagenet").split()[:5] == ["imagenet", "incomplete", "3", "/", "1331167"]
    assert "1 validation images lie directly in" in output
