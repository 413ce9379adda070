"""Convolutional backbones with feature taps and per-convolution dropout hooks (one file per model family)."""

from .common import DropoutHook
from .squeezenet import SqueezeNetFeatures
from .vgg import VGG16Features

__all__ = ["DropoutHook", "SqueezeNetFeatures", "VGG16Features"]
