"""Convolutional backbones with feature taps and per-convolution dropout hooks (one file per model family)."""

from .alexnet import AlexNetFeatures
from .common import DropoutHook
from .squeezenet import SqueezeNetFeatures
from .vgg import VGG16Features

__all__ = ["AlexNetFeatures", "DropoutHook", "SqueezeNetFeatures", "VGG16Features"]
