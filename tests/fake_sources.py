"""Fake copies of the preparation tool's sources: for each dataset, archives shaped as ``datasets/prepare/sources.py``
says, holding a tiny dataset in the layout its module reads, served by ``archive_server.ArchiveServer``; Google
Drive is replaced by an in-memory downloader. ``prepare_in_subprocess`` runs the command line against them in a
fresh interpreter, as a user runs ``python -m datasets.prepare``."""
import dataclasses
import json
import os
import pickle
import subprocess
import sys

from archive_server import archive_bytes, md5
from test_prepare_ilsvrc import LEAF_IDS

from datasets.imagenet import ImageNet
from datasets.imagenet_variants import ImageNetV2, ImageNetVariant
from datasets.prepare.fetch import DownloadError
from datasets.prepare.layout import dataset_classes, layout_attributes
from datasets.prepare.sources import GDRIVE, SOURCES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = dataset_classes()


# ----- a tiny world: the layout files a dataset must end with, and archives that hold them -----
def dataset_files(cls):
    """``({path in the dataset folder: bytes}, {Google Drive id: bytes}, number of images)`` for a tiny dataset
    in the layout ``cls`` reads; the split file / classnames.txt are what the module's ids fetch."""
    files, gdrive = {}, {}
    if cls.__name__ == "FGVCAircraft":
        variants = ["707-320", "A300B4"]
        files["variants.txt"] = "\n".join(variants).encode() + b"\n"
        for split_index, split in enumerate(("train", "val", "test")):
            lines = []
            for label, variant in enumerate(variants):
                image_id = f"{split_index}{label}00"
                files[f"{cls.image_dir}/{image_id}.jpg"] = image_id.encode()
                lines.append(f"{image_id} {variant}")
            files[f"images_variant_{split}.txt"] = ("\n".join(lines) + "\n").encode()
        return files, gdrive, 6
    if issubclass(cls, ImageNetVariant):
        wnids = list(LEAF_IDS.values())
        gdrive[ImageNet.classnames_file_id] = "".join(f"{wnid} class {wnid}\n" for wnid in wnids).encode()
        folders = [str(label) for label in range(len(wnids))] if cls is ImageNetV2 else wnids
        for folder in folders:
            for k in range(2):
                files[os.path.join(cls.image_dir, folder, f"{k}.jpg")] = f"{folder}{k}".encode()
        return files, gdrive, len(folders) * 2
    split = {}
    for name, count in (("train", 3), ("val", 1), ("test", 2)):
        split[name] = []
        for label, classname in enumerate(["alpha", "beta"]):
            for k in range(count):
                relative = f"{classname}/{name}_{k}.jpg"
                files[os.path.join(cls.image_dir, relative)] = relative.encode()
                split[name].append([relative, label, classname])
    gdrive[cls.split_file_id] = json.dumps(split).encode()
    return files, gdrive, 12


def archive_members(places, files, attributes):
    """What an archive must hold so that ``places`` put ``files`` where they belong."""
    members = {}
    for place in places:
        if place.unpack:
            members[place.member] = archive_bytes(place.member, archive_members(place.unpack, files, attributes))
            continue
        target = place.target.format(**attributes)
        chosen = {path: data for path, data in files.items()
                  if target == "" or path == target or path.startswith(target + "/")}
        members[f"{place.member}/README.txt"] = b"not part of the layout's images"
        members[os.path.join(os.path.dirname(place.member), "outside.txt")] = b"beside the member: not placed"
        for path, data in chosen.items():
            members[f"{place.member}/{path if target == '' else os.path.relpath(path, target)}"] = data
    return members


class FakeWorld:
    """Serves the fake files of the datasets it is given; counts what it is asked for."""

    def __init__(self, server):
        self.server = server
        self.gdrive_files, self.gdrive_calls, self.images = {}, [], {}

    def gdrive(self, file_id, output, progress):
        self.gdrive_calls.append(file_id)
        if file_id not in self.gdrive_files:
            raise DownloadError(f"no such file {file_id}")
        with open(output, "wb") as handle:
            handle.write(self.gdrive_files[file_id])

    def recipe(self, name):
        """The table's recipe for ``name`` with each download replaced by a fake of the same shape."""
        cls, recipe = CLASSES[name], SOURCES[name]
        files, gdrive, count = dataset_files(cls)
        self.gdrive_files.update(gdrive)
        self.images[name] = count
        downloads = []
        for download in recipe.downloads:
            if download.places:
                data = archive_bytes(download.name, archive_members(download.places, files, layout_attributes(cls)))
            else:
                data = b"plain file " + download.name.encode()
            sources = []
            for index, source in enumerate(download.sources):
                if source.startswith(GDRIVE):
                    self.gdrive_files[source[len(GDRIVE):]] = data
                    sources.append(source)
                else:
                    self.server.files[f"{name}/{index}/{download.name}"] = data
                    sources.append(self.server.url(f"{name}/{index}/{download.name}"))
            downloads.append(dataclasses.replace(download, sources=tuple(sources), md5=md5(data), sha256=None))
        expected = count if recipe.expected_images is not None else None
        return dataclasses.replace(recipe, downloads=tuple(downloads), expected_images=expected)


# The child imports nothing but the command line and the pickled table: registration, sys.path (the working
# directory, as for ``python -m``) and everything else come from the entry point, never from the test process.
CHILD = """
import pickle, sys
from datasets.prepare.cli import main
from datasets.prepare.fetch import DownloadError
with open(sys.argv[1], "rb") as handle:
    sources, files = pickle.load(handle)
def gdrive(file_id, output, progress):
    if file_id not in files:
        raise DownloadError(f"no such file {file_id}")
    with open(output, "wb") as handle:
        handle.write(files[file_id])
sys.exit(main(sys.argv[2:], gdrive=gdrive, sources=sources))
"""


def prepare_in_subprocess(world, sources, argv, workdir, env=None):
    """``python -m datasets.prepare ARGV`` in a fresh interpreter (cwd: the repository), downloading from
    ``sources`` and the world's Google Drive files; returns the ``CompletedProcess``."""
    table = os.path.join(str(workdir), "fake_sources.pickle")
    with open(table, "wb") as handle:
        pickle.dump((sources, world.gdrive_files), handle)
    return subprocess.run([sys.executable, "-c", CHILD, table, *argv], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=600)
