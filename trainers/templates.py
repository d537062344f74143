"""Hand-crafted prompt templates shared by the trainers.

Each dataset module carries its own single template (``template`` attribute). The ensemble below is the
7-template selection of CLIP's ImageNet prompt-engineering notebook, as used by CoOp's ``ZeroshotCLIP2``.
"""

DEFAULT_TEMPLATE = "a photo of a {}."

ENSEMBLE_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def select_templates(kind, dataset_template, ensemble_adds_dataset_template=True, ensemble=None):
    """``dataset``: the dataset's own template; ``ensemble``: the dataset's own ensemble when it has one (the
    embedded world's: the phrasings its CLIP was pretrained on), else the 7 above plus the dataset's own template
    unless the dataset opts out (CoOp adds it for every dataset but ImageNet)."""
    if kind == "dataset":
        return (dataset_template,)
    if kind == "ensemble":
        if ensemble:
            return tuple(ensemble)
        return ENSEMBLE_TEMPLATES + ((dataset_template,) if ensemble_adds_dataset_template else ())
    raise ValueError(f"TEMPLATES must be 'dataset' or 'ensemble'; got {kind!r}")


def dataset_templates(kind, dataset):
    """The templates of a hand-crafted view of a Dassl dataset: ``dataset`` (its own template) or ``ensemble``."""
    return select_templates(kind, getattr(dataset, "template", DEFAULT_TEMPLATE),
                            getattr(dataset, "ensemble_adds_template", True), getattr(dataset, "ensemble_templates", None))
