"""Dassl's data manager with images read by ``common.images.read_rgb``."""
from dassl.data import DataManager
from dassl.data.data_manager import DatasetWrapper

from common.images import read_rgb


class CheckedImages(DatasetWrapper):
    """Dassl's dataset wrapper (same output dictionary) reading images with ``read_rgb``: every common image mode
    is read correctly, and a file that cannot be read is reported by name."""

    def __getitem__(self, idx):
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img0 = read_rgb(item.impath)
        if self.transform is None:
            output["img"] = img0
        else:
            transforms = self.transform if isinstance(self.transform, (list, tuple)) else [self.transform]
            for i, transform in enumerate(transforms):
                views = [transform(img0) for _ in range(self.k_tfm)]
                output["img" if i == 0 else f"img{i + 1}"] = views[0] if len(views) == 1 else views
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output


def build_data_manager(cfg):
    return DataManager(cfg, dataset_wrapper=CheckedImages)
