"""Search spaces: the `Space` contract and registry, the table-backed NAS-Bench-201 and FBNet spaces, and the
MBConv layer-wise spaces with their weight-sharing supernet."""

from ._base import MAX_ENUMERATE, SPACES, CellSpace, Space, get_space, list_spaces, register_space
from ._fbnet import FBNET_STAGES, FBNetBlock, FBNetNetwork, FBNetSpace, build_fbnet, layer_shapes
from ._mbconv import MBCONV_OPS, WIDTH_CHOICES, MBConvNet, MBConvSpace, MBConvStage, op_params
from ._nb201 import EDGES, NB201Cell, NB201Network, NB201Space, arch_str, build_nb201, live_edges, prune_dead
from ._resnet import DEPTH_CHOICES, RESNET_WIDTHS, ResNetSpace, resnet_cost
from ._resnet_supernet import ResNetSupernet
from ._supernet import WEIGHT_SHARING, ElasticConvBN, MBConvSupernet
from ._tabular import ACCURACY_DATASETS, TabularSpace

__all__ = [
    "ACCURACY_DATASETS",
    "DEPTH_CHOICES",
    "EDGES",
    "FBNET_STAGES",
    "MAX_ENUMERATE",
    "MBCONV_OPS",
    "RESNET_WIDTHS",
    "SPACES",
    "WEIGHT_SHARING",
    "WIDTH_CHOICES",
    "CellSpace",
    "ElasticConvBN",
    "FBNetBlock",
    "FBNetNetwork",
    "FBNetSpace",
    "MBConvNet",
    "MBConvSpace",
    "MBConvStage",
    "MBConvSupernet",
    "NB201Cell",
    "NB201Network",
    "NB201Space",
    "ResNetSpace",
    "ResNetSupernet",
    "Space",
    "TabularSpace",
    "arch_str",
    "build_fbnet",
    "build_nb201",
    "get_space",
    "layer_shapes",
    "list_spaces",
    "live_edges",
    "op_params",
    "prune_dead",
    "register_space",
    "resnet_cost",
]
