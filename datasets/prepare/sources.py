"""Where each dataset's files come from and how they map onto the layout its module reads: the one table of URLs,
file ids, sizes and checksums, each entry naming its origin.

What this table does not restate (it comes from the dataset modules in ``datasets/``, one place for each fact):
the dataset folder (``dataset_dir``), the image folder (``image_dir``; a ``Place`` target ``"{image_dir}"`` means
it), the split file and its Google Drive id (``split_file``, ``split_file_id``) and ImageNet's ``classnames.txt`` id
(``ImageNet.classnames_file_id``); ``layout.module_files`` adds those downloads.

Checksums are the ones published with the source named in ``origin`` (md5 where that is what the source
publishes). Where no trusted value is known the field is None: the tool then verifies the size the server
announces and prints the sha256 it computed, so that it can be pinned here. No size below is known for sure,
so every ``size`` is None (the server's Content-Length is checked instead).
"""
from dataclasses import dataclass

GDRIVE = "gdrive:"  # a source "gdrive:<file id>" is a Google Drive file, fetched with gdown


@dataclass(frozen=True)
class Place:
    """Move ``member`` (a path inside the extracted archive) to ``target`` (a path in the dataset folder, formatted
    with the dataset module's attributes, e.g. ``"{image_dir}"``; ``""`` is the dataset folder itself, into which
    the member's contents are merged). With ``unpack``, ``member`` is itself an archive, extracted in turn and
    placed by those inner ``Place``s."""

    member: str
    target: str = ""
    unpack: tuple = ()


@dataclass(frozen=True)
class Download:
    """One file: ``sources`` are tried in order (official first, mirrors after). An archive has ``places``; a plain
    file has ``target`` (its path in the dataset folder). No ``sources``: the user must put it in place."""

    name: str
    sources: tuple
    origin: str
    md5: str = None
    sha256: str = None
    size: int = None
    places: tuple = ()
    target: str = None


@dataclass(frozen=True)
class Recipe:
    """``manual``: the steps a user must take (account needed, or the source is dead), printed when the layout is
    incomplete; formatted with ``{dataset_folder}`` and ``{downloads}``. ``expected_images``: the known total for
    datasets listed from their folders (with a split file, the count comes from the split file instead).
    ``custom``: a step of its own instead of the generic download-and-place: "ilsvrc" (ImageNet), whose
    ``downloads`` are the training, validation and devkit archives, in that order, put in place by the user."""

    downloads: tuple = ()
    manual: str = None
    expected_images: int = None
    expected_origin: str = ""
    custom: str = None


COOP = "CoOp's DATASETS.md (github.com/KaiyangZhou/CoOp)"
TORCHVISION = "torchvision 0.29 torchvision/datasets/{}"

# ImageNet's own archives are never downloaded (an image-net.org account is needed, so they have no sources);
# ``ilsvrc`` verifies and unpacks them once the user has put them in place.
ILSVRC_ORIGIN = "image-net.org ILSVRC2012 (account needed); md5 from " + TORCHVISION.format("imagenet.py")
ILSVRC_TRAIN = Download("ILSVRC2012_img_train.tar", (), ILSVRC_ORIGIN, md5="1d675b47d978889d74fa0da5fadfb00e")
ILSVRC_VAL = Download("ILSVRC2012_img_val.tar", (), ILSVRC_ORIGIN, md5="29b22e2961454d5413ddabcf34fc5622")
ILSVRC_DEVKIT = Download("ILSVRC2012_devkit_t12.tar.gz", (), ILSVRC_ORIGIN, md5="fa75699e90414af021442c21a62c3abf")

IMAGENET_STEPS = """\
ImageNet needs an account at https://image-net.org (ILSVRC 2012). Log in, download
  ILSVRC2012_img_train.tar (138 GB), ILSVRC2012_img_val.tar (6.3 GB), ILSVRC2012_devkit_t12.tar.gz (2.5 MB)
and put them in {dataset_folder} (or in {downloads}), then run this command again: it verifies them (md5),
extracts the training set into images/train/<wnid>/ and the validation set into images/val/<wnid>/, sorting
the validation images into class folders with the devkit's ground truth.
Already extracted? Put (or symlink) the training class folders in {dataset_folder}/images/train/ and the
validation images in {dataset_folder}/images/val/ (flat, as they come out of the tar, is fine: the tool sorts
them when ILSVRC2012_devkit_t12.tar.gz or Kaggle's LOC_val_solution.csv is in {dataset_folder})."""

STANFORD_CARS_STEPS = """\
Stanford Cars' official source (ai.stanford.edu/~jkrause/cars) is offline, so its images cannot be fetched
automatically (torchvision dropped its download for the same reason). From a copy you trust, put
  cars_train/ (8,144 .jpg) and cars_test/ (8,041 .jpg)
in {dataset_folder} (devkit/ and cars_test_annos_withlabels.mat may sit beside them; they are not read), so that
{dataset_folder}/cars_train/00001.jpg exists, then run this command again to verify."""

SOURCES = {
    "caltech101": Recipe((
        Download(
            "caltech-101.zip", ("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",),
            "Caltech's data repository (the vision.caltech.edu link in " + COOP + " is dead); URL and md5 from "
            + TORCHVISION.format("caltech.py"),
            md5="3138e1922a9193bfa496528edbbc45d0",
            places=(Place("caltech-101/101_ObjectCategories.tar.gz",
                          unpack=(Place("101_ObjectCategories", "{image_dir}"),)),),
        ),
    )),
    "oxford_pets": Recipe((
        Download("images.tar.gz", ("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",),
                 COOP + "; md5 from " + TORCHVISION.format("oxford_iiit_pet.py"),
                 md5="5c4f3ee8e5d25df40f4fd59a7f44e54c", places=(Place("images", "{image_dir}"),)),
        Download("annotations.tar.gz", ("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",),
                 COOP + "; md5 from " + TORCHVISION.format("oxford_iiit_pet.py"),
                 md5="95a8c909bbe2e81eed6a22bccdf3f68f", places=(Place("annotations", "annotations"),)),
    )),
    "oxford_flowers": Recipe((
        Download("102flowers.tgz", ("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",),
                 COOP + "; md5 from " + TORCHVISION.format("flowers102.py"),
                 md5="52808999861908f626f3c1f4e79d11fa", places=(Place("jpg", "{image_dir}"),)),
        Download("imagelabels.mat", ("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",),
                 COOP + "; md5 from " + TORCHVISION.format("flowers102.py"),
                 md5="e0620be6f572b9609742df49c70aed4d", target="imagelabels.mat"),
        Download("cat_to_name.json", (GDRIVE + "1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0",), COOP, target="cat_to_name.json"),
    )),
    "food101": Recipe((
        Download("food-101.tar.gz", ("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",),
                 COOP + " (ETH Zurich); URL and md5 from " + TORCHVISION.format("food101.py"),
                 md5="85eeb15f3717b99a5da872d97d918f87", places=(Place("food-101", ""),)),
    )),
    "fgvc_aircraft": Recipe((
        # CoOp's layout is the archive's data/ folder renamed: images/, variants.txt, images_variant_*.txt.
        Download("fgvc-aircraft-2013b.tar.gz",
                 ("https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",),
                 COOP + " (no published checksum)", places=(Place("fgvc-aircraft-2013b/data", ""),)),
    )),
    "sun397": Recipe((
        Download("SUN397.tar.gz", ("http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",),
                 COOP + "; md5 from " + TORCHVISION.format("sun397.py"),
                 md5="8ca2778205c41d23104230ba66911c7a", places=(Place("SUN397", "{image_dir}"),)),
    )),
    "dtd": Recipe((
        Download("dtd-r1.0.1.tar.gz", ("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",),
                 COOP + "; md5 from " + TORCHVISION.format("dtd.py"),
                 md5="fff73e5086ae6bdbea199a49dfb8a4c1", places=(Place("dtd", ""),)),
    )),
    "eurosat": Recipe((
        Download(
            "EuroSAT.zip",
            ("https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/"
             "EuroSAT.zip",),
            "TorchGeo's copy on Hugging Face (the madm.dfki.de link in " + COOP + " is dead); URL and md5 from "
            + TORCHVISION.format("eurosat.py"),
            md5="c8fa014336c82ac7804f0398fcb19387", places=(Place("2750", "{image_dir}"),)),
    )),
    "ucf101": Recipe((
        Download("UCF-101-midframes.zip", (GDRIVE + "10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O",),
                 COOP + " (middle frames extracted by CoOp's authors)",
                 places=(Place("UCF-101-midframes", "{image_dir}"),)),
    )),
    "stanford_cars": Recipe(manual=STANFORD_CARS_STEPS),
    "imagenet": Recipe(
        (ILSVRC_TRAIN, ILSVRC_VAL, ILSVRC_DEVKIT), manual=IMAGENET_STEPS, custom="ilsvrc",
        expected_images=1_281_167 + 50_000, expected_origin="ILSVRC2012: 1,281,167 training + 50,000 validation",
    ),
    "imagenetv2": Recipe(
        (Download("imagenetv2-matched-frequency.tar.gz",
                  ("https://s3-us-west-2.amazonaws.com/imagenetv2public/imagenetv2-matched-frequency.tar.gz",
                   "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"
                   "imagenetv2-matched-frequency.tar.gz"),
                  COOP + " (S3); mirror from github.com/modestyachts/ImageNetV2_pytorch (no published checksum)",
                  places=(Place("imagenetv2-matched-frequency-format-val", "{image_dir}"),)),),
        expected_images=10_000, expected_origin="TFDS catalog imagenet_v2 (matched-frequency test split)",
    ),
    "imagenet_sketch": Recipe(
        (Download("ImageNet-Sketch.zip",
                  (GDRIVE + "1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA",
                   "https://huggingface.co/datasets/songweig/imagenet_sketch/resolve/main/data/ImageNet-Sketch.zip"),
                  "github.com/HaohanWang/ImageNet-Sketch README (Google Drive); mirror: the dataset's Hugging Face "
                  "copy (no published checksum)",
                  places=(Place("sketch", "{image_dir}"),)),),
        expected_images=50_889, expected_origin="TFDS catalog imagenet_sketch",
    ),
    "imagenet_a": Recipe(
        (Download("imagenet-a.tar", ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",),
                  "github.com/hendrycks/natural-adv-examples README; md5 from torch-uncertainty "
                  "(torch_uncertainty/datasets/imagenet/imagenet_a.py)",
                  md5="c3e55429088dc681f30d81f4726b6595", places=(Place("imagenet-a", "{image_dir}"),)),),
        expected_images=7_500, expected_origin="TFDS catalog imagenet_a",
    ),
    "imagenet_r": Recipe(
        (Download("imagenet-r.tar", ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",),
                  "github.com/hendrycks/imagenet-r README; md5 from torch-uncertainty "
                  "(torch_uncertainty/datasets/imagenet/imagenet_r.py)",
                  md5="a61312130a589d0ca1a8fca1f2bd3337", places=(Place("imagenet-r", "{image_dir}"),)),),
        expected_images=30_000, expected_origin="github.com/hendrycks/imagenet-r README; TFDS catalog imagenet_r",
    ),
}
