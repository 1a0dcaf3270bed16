"""Fashion-MNIST: 70,000 28x28 grayscale images of 10 kinds of clothing, from the standard IDX .gz files."""
import os

import numpy as np

from .download import DEADLINE, TIMEOUT, fetch_from_mirrors
from .idx import DatasetError, read_idx

FILES = {
    "train-images": "train-images-idx3-ubyte.gz",
    "train-labels": "train-labels-idx1-ubyte.gz",
    "t10k-images": "t10k-images-idx3-ubyte.gz",
    "t10k-labels": "t10k-labels-idx1-ubyte.gz",
}
# sha256 of the decompressed IDX content, so that the upstream .gz files and repackaged ones both pass.
CHECKSUMS = {
    "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
MIRRORS = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
]
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def cache_dir():
    return os.path.join(os.path.expanduser("~"), ".cache", "tinygradnorm", "fashion-mnist")


def candidate_dirs(root=None):
    """Where to look: root alone when it is given (as torchvision does); else, in order, $TINYGRADNORM_DATA,
    the user cache and the Debian package's directory."""
    if root:
        return [os.fspath(root)]
    dirs = [os.environ.get("TINYGRADNORM_DATA"), cache_dir(), SYSTEM_DIR]
    return [os.fspath(d) for d in dirs if d]


def _has_files(directory, keys):
    return all(os.path.exists(os.path.join(directory, FILES[k])) for k in keys)


class FashionMNIST:
    """The train (60,000) or test (10,000) split.

    ``images`` is float32 (N, 1, 28, 28) in [0, 1]; ``labels`` is int64 (N,). The files are
    found or downloaded as ``candidate_dirs`` describes, and verified before use. A download waits
    at most ``timeout`` seconds per connect or read and ``deadline`` seconds in all, per file.
    """

    classes = CLASSES

    def __init__(self, root=None, train=True, download=True, mirrors=None, timeout=TIMEOUT, deadline=DEADLINE):
        split = "train" if train else "t10k"
        keys = (f"{split}-images", f"{split}-labels")
        searched = candidate_dirs(root)
        directory = next((d for d in searched if _has_files(d, keys)), None)
        if directory is None:
            target = os.fspath(root) if root else (os.environ.get("TINYGRADNORM_DATA") or cache_dir())
            if not download:
                raise DatasetError(self._not_found(searched, keys, "download=False"))
            try:
                for k in keys:
                    dest = os.path.join(target, FILES[k])
                    if not os.path.exists(dest):
                        fetch_from_mirrors(FILES[k], mirrors or MIRRORS, dest, CHECKSUMS[k], timeout=timeout,
                                           deadline=deadline)
            except DatasetError as e:
                raise DatasetError(self._not_found(searched, keys, str(e))) from None
            directory = target
        self.root = directory
        self.train = train
        raw_images = read_idx(os.path.join(directory, FILES[keys[0]]), 3, CHECKSUMS[keys[0]])
        raw_labels = read_idx(os.path.join(directory, FILES[keys[1]]), 1, CHECKSUMS[keys[1]])
        if len(raw_images) != len(raw_labels):
            raise DatasetError(f"{directory}: {len(raw_images)} images but {len(raw_labels)} labels")
        if raw_labels.size and raw_labels.max() >= len(CLASSES):
            raise DatasetError(f"{directory}: label {int(raw_labels.max())} is not one of the {len(CLASSES)} classes")
        self.raw_images = raw_images
        self.images = (raw_images.astype(np.float32) / 255.0)[:, None]
        self.labels = raw_labels.astype(np.int64)

    @staticmethod
    def _not_found(searched, keys, why):
        files = ", ".join(FILES[k] for k in keys)
        where = "\n".join(f"  - {d}" for d in searched)
        return (f"Fashion-MNIST files ({files}) were not found in:\n{where}\nand could not be downloaded: {why}\n"
                "Fix it with one of:\n"
                "  - apt-get install dataset-fashion-mnist   (Debian/Ubuntu; installs them in " + SYSTEM_DIR + ")\n"
                "  - put the four .gz files in a directory and pass root=... (examples: --data-dir DIR)\n"
                "  - set TINYGRADNORM_DATA=DIR\n"
                "  - connect to the internet and keep download=True")

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def arrays(self):
        """(images, labels) as whole arrays, for DataLoader's fast path."""
        return self.images, self.labels

    def __repr__(self):
        return f"FashionMNIST({'train' if self.train else 'test'}, {len(self)} images, root={self.root!r})"
