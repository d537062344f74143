"""Accuracies the baselines' papers publish (ViT-B/16, 16 shots, averages over 3 seeds), printed beside the measured
ones by ``scripts/tables.py``. Every number names its source; numbers we are not sure of are left out.

Datasets are keyed by their registered names (``DATASET.NAME`` in configs/datasets/*.yaml). Methods are the papers'
names; ``TRAINER_OF`` maps them to this toolbox's trainers.
"""

MAPLE_PAPER = "Khattak et al., MaPLe: Multi-modal Prompt Learning, CVPR 2023"

SOURCES = {
    "base2new": f"{MAPLE_PAPER}, Table 1 (base-to-novel generalization)",
    "xd": f"{MAPLE_PAPER}, Table 2 (cross-dataset evaluation; its CoOp and CoCoOp rows are those of Zhou et al., "
          "CoCoOp, CVPR 2022, Table 2)",
    "dg": f"{MAPLE_PAPER}, Table 3 (domain generalization; its CLIP, CoOp and CoCoOp rows are those of Zhou et al., "
          "CoCoOp, CVPR 2022, Table 3)",
}

TRAINER_OF = {"CLIP": "ZeroshotCLIP", "CoOp": "CoOp", "CoCoOp": "CoCoOp", "MaPLe": "MaPLe", "KgCoOp": "KgCoOp",
              "IVLP": "IVLP", "PromptSRC": "PromptSRC"}

# Base-to-new: method -> dataset -> (base, new, harmonic mean). Source: SOURCES["base2new"].
BASE2NEW = {
    "CLIP": {
        "ImageNet": (72.43, 68.14, 70.22), "Caltech101": (96.84, 94.00, 95.40), "OxfordPets": (91.17, 97.26, 94.12),
        "StanfordCars": (63.37, 74.89, 68.65), "OxfordFlowers": (72.08, 77.80, 74.83),
        "Food101": (90.10, 91.22, 90.66), "FGVCAircraft": (27.19, 36.29, 31.09), "SUN397": (69.36, 75.35, 72.23),
        "DescribableTextures": (53.24, 59.90, 56.37), "EuroSAT": (56.48, 64.05, 60.03),
        "UCF101": (70.53, 77.50, 73.85),
    },
    "CoOp": {
        "ImageNet": (76.47, 67.88, 71.92), "Caltech101": (98.00, 89.81, 93.73), "OxfordPets": (93.67, 95.29, 94.47),
        "StanfordCars": (78.12, 60.40, 68.13), "OxfordFlowers": (97.60, 59.67, 74.06),
        "Food101": (88.33, 82.26, 85.19), "FGVCAircraft": (40.44, 22.30, 28.75), "SUN397": (80.60, 65.89, 72.51),
        "DescribableTextures": (79.44, 41.18, 54.24), "EuroSAT": (92.19, 54.74, 68.69),
        "UCF101": (84.69, 56.05, 67.46),
    },
    "CoCoOp": {
        "ImageNet": (75.98, 70.43, 73.10), "Caltech101": (97.96, 93.81, 95.84), "OxfordPets": (95.20, 97.69, 96.43),
        "StanfordCars": (70.49, 73.59, 72.01), "OxfordFlowers": (94.87, 71.75, 81.71),
        "Food101": (90.70, 91.29, 90.99), "FGVCAircraft": (33.41, 23.71, 27.74), "SUN397": (79.74, 76.86, 78.27),
        "DescribableTextures": (77.01, 56.00, 64.85), "EuroSAT": (87.49, 60.04, 71.21),
        "UCF101": (82.33, 73.45, 77.64),
    },
    "MaPLe": {
        "ImageNet": (76.66, 70.54, 73.47), "Caltech101": (97.74, 94.36, 96.02), "OxfordPets": (95.43, 97.76, 96.58),
        "StanfordCars": (72.94, 74.00, 73.47), "OxfordFlowers": (95.92, 72.46, 82.56),
        "Food101": (90.71, 92.05, 91.38), "FGVCAircraft": (37.44, 35.61, 36.50), "SUN397": (80.82, 78.70, 79.75),
        "DescribableTextures": (80.36, 59.18, 68.16), "EuroSAT": (94.07, 73.23, 82.35),
        "UCF101": (83.00, 78.66, 80.77),
    },
}

# The papers' 11-dataset averages (Base, New, HM), as the MaPLe README tabulates them; a method whose source is
# another is named in BASE2NEW_AVERAGE_SOURCES.
BASE2NEW_AVERAGE = {
    "CLIP": (69.34, 74.22, 71.70),
    "CoOp": (82.69, 63.22, 71.66),
    "CoCoOp": (80.47, 71.69, 75.83),
    "MaPLe": (82.28, 75.14, 78.55),
    "KgCoOp": (80.73, 73.6, 77.0),
    "IVLP": (84.21, 71.79, 77.51),
    "PromptSRC": (84.26, 76.10, 79.97),
}
# KgCoOp has an average only: its README tabulates no dataset, and its per-dataset numbers were not read in a source.
BASE2NEW_AVERAGE_SOURCES = {
    "KgCoOp": "Yao et al., KgCoOp, CVPR 2023: the table of 11-dataset averages in the README of "
              "github.com/htyao89/KgCoOp (the precision is the README's)",
    # IVLP and PromptSRC: averages only here; the per-dataset numbers (the PromptSRC paper's tables) were not read.
    "IVLP": "Khattak et al., PromptSRC, ICCV 2023: the README of github.com/muzairkhattak/PromptSRC, its table "
            "comparing PromptSRC with the Independent V-L Prompting baseline (20 epochs)",
    "PromptSRC": "Khattak et al., PromptSRC, ICCV 2023: the README of github.com/muzairkhattak/PromptSRC, its tables "
                 "of 11-dataset base-to-novel averages",
}

# Cross-dataset: method -> dataset -> accuracy; ImageNet is the source. Source: SOURCES["xd"].
CROSS_DATASET = {
    "CoOp": {
        "ImageNet": 71.51, "Caltech101": 93.70, "OxfordPets": 89.14, "StanfordCars": 64.51, "OxfordFlowers": 68.71,
        "Food101": 85.30, "FGVCAircraft": 18.47, "SUN397": 64.15, "DescribableTextures": 41.92, "EuroSAT": 46.39,
        "UCF101": 66.55,
    },
    "CoCoOp": {
        "ImageNet": 71.02, "Caltech101": 94.43, "OxfordPets": 90.14, "StanfordCars": 65.32, "OxfordFlowers": 71.88,
        "Food101": 86.06, "FGVCAircraft": 22.94, "SUN397": 67.36, "DescribableTextures": 45.73, "EuroSAT": 45.37,
        "UCF101": 68.21,
    },
    "MaPLe": {
        "ImageNet": 70.72, "Caltech101": 93.53, "OxfordPets": 90.49, "StanfordCars": 65.57, "OxfordFlowers": 72.23,
        "Food101": 86.20, "FGVCAircraft": 24.74, "SUN397": 67.01, "DescribableTextures": 46.49, "EuroSAT": 48.06,
        "UCF101": 68.69,
    },
}
# Average over the 10 target datasets, as published.
CROSS_DATASET_AVERAGE = {"CoOp": 63.88, "CoCoOp": 65.74, "MaPLe": 66.30}

# Domain generalisation: method -> dataset -> accuracy; ImageNet is the source. Source: SOURCES["dg"].
DOMAIN_GENERALIZATION = {
    "CLIP": {"ImageNet": 66.73, "ImageNetV2": 60.83, "ImageNetSketch": 46.15, "ImageNetA": 47.77, "ImageNetR": 73.96},
    "CoOp": {"ImageNet": 71.51, "ImageNetV2": 64.20, "ImageNetSketch": 47.99, "ImageNetA": 49.71, "ImageNetR": 75.21},
    "CoCoOp": {"ImageNet": 71.02, "ImageNetV2": 64.07, "ImageNetSketch": 48.75, "ImageNetA": 50.63, "ImageNetR": 76.18},
    "MaPLe": {"ImageNet": 70.72, "ImageNetV2": 64.07, "ImageNetSketch": 49.15, "ImageNetA": 50.90, "ImageNetR": 76.98},
}
# Average over the 4 target datasets, as published.
DOMAIN_GENERALIZATION_AVERAGE = {"CLIP": 57.18, "CoOp": 59.28, "CoCoOp": 59.91, "MaPLe": 60.27}

# Few-shot: CoOp's paper publishes its few-shot results as curves (figures), not as numbers; none are given here.
