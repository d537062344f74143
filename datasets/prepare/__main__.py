import sys

from common.dassl_env import import_dassl

import_dassl()  # first: Dassl without its import side effects

import datasets  # noqa: E402

datasets.register_with_dassl()  # the dataset classes the command looks up by name

from .cli import main  # noqa: E402

sys.exit(main())
