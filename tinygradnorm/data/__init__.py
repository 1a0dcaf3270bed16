"""tinygradnorm.data: Fashion-MNIST, IDX files and mini-batch loading."""
from .fashion_mnist import FashionMNIST, candidate_dirs
from .idx import DatasetError, read_idx
from .loader import DataLoader, TensorDataset
from .sampler import DistributedSampler
