"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in plain PyTorch.

What it is
----------
The metric-learning network of dlib's ``dnn_face_recognition_ex.cpp``: a 150x150 RGB aligned
face chip (as cut by ``dlib.get_face_chip`` / ``extract_image_chip(img,
get_face_chip_details(shape, 150, 0.25))``) goes to a 128-D descriptor; two faces are "the same
person" when the Euclidean distance of their descriptors is below 0.6. dlib-models' README:
"a ResNet network with 29 conv layers ... essentially a version of the ResNet-34 network ...
with a few layers removed and the number of filters per layer reduced by half", trained from
scratch with a pair-wise hinge ("loss_metric") loss on about 3 million faces of 7485
identities (FaceScrub, VGG-Face and images scraped from the internet), 99.38% on LFW.

:class:`DlibFaceResNet` reproduces dlib's network definition exactly (the ``anet_type`` of
``examples/dnn_face_recognition_ex.cpp``, identical to the ``anet_type`` in dlib's Python
binding ``tools/python/src/face_recognition.cpp``)::

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

    alevel0 = ares_down<256>
    alevel1 = ares<256, ares<256, ares_down<256>>>
    alevel2 = ares<128, ares<128, ares_down<128>>>
    alevel3 = ares<64, ares<64, ares<64, ares_down<64>>>>
    alevel4 = ares<32, ares<32, ares<32>>>
    block<N, stride>  = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,stride,stride, x>>>>>
    ares<N>      = relu<add_prev1<block<N,1, tag1<x>>>>                   # identity skip
    ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N,2, tag1<x>>>>>>>

(templates read inside-out: ``alevel4`` runs first, ``alevel0`` last). Details that matter
for an exact port, all from ``dlib/dnn/layers.h`` (the version whose serialisation tags match
the file: ``con_4``, ``max_pool_2``, ``avg_pool_2``, ``affine_``, ``fc_2``):

* ``con_``/``max_pool_``/``avg_pool_`` default padding is ``_stride!=1 ? 0 : _nr/2``: the
  strided convolutions (7x7/2 stem, 3x3/2 in ``ares_down``) and all pools have *no* padding;
  the stride-1 3x3 convolutions have padding 1. (The file also stores each padding; the
  loader checks them.) Convolutions have a bias (``con_`` always has one in this version).
* ``affine_`` is the inference-time batch norm dlib substitutes for ``bn_con``: per-channel
  ``y = gamma * x + beta`` (``tt::affine_transform_conv``), parameters stored as
  ``[gamma(k), beta(k)]``.
* ``add_prev_::forward`` sizes its output as the element-wise *max* of both inputs' shapes
  and adds them with ``tt::add(output, t1, t2)``, which treats positions outside a tensor as
  zero. In ``ares_down`` the skip path (2x2/2 average pool of the block input) has fewer
  channels than the block (zero channels appended), and at 150 px the ``alevel1`` block's
  3x3/2 unpadded conv gives 3x3 while the pooled skip is 4x4: the block output is zero-padded
  at the bottom/right to 4x4. :func:`add_prev` reproduces that.
* ``avg_pool_everything`` = ``avg_pool_<0,0,1,1>``: a global average pool;
  ``fc_<128, FC_NO_BIAS>`` computes ``out = x * W`` with ``W`` of shape (256, 128).
* ``loss_metric_::to_label`` copies the fc output: the descriptor is *not* L2-normalised.
* Input (``dlib/dnn/input.h``, ``input_rgb_image_sized::to_tensor``): channel order R, G, B,
  value ``(pixel - avg) / 256`` with ``avg = (122.782, 117.001, 104.298)`` (read from the file).

Output sizes at 150 px: stem conv 72, max-pool 35 (32 ch), 17 (64), 8 (128), 4 (256, see
above), 2 (256), global pool -> 256 -> 128. 5,614,592 parameters (29 convolutions with
biases, 29 affine scale/shift pairs, the 256x128 fc); 5,581,824 without the fc. Because no
strided layer is padded, the full network needs inputs of at least 103x103 px (``alevel0``'s
3x3/2 conv needs a 3x3 map); ``levels=4`` (stop after ``alevel1``, 256 ch) runs from 55 px,
``levels=3`` (after ``alevel2``, 128 ch) from 31 px.

The file format (:func:`read_dlib_net`): dlib's ``serialize()`` (``dlib/serialize.h``):
integers are one byte ``n | 0x80*negative`` followed by ``n`` little-endian magnitude bytes;
``float``/``double`` are an integer mantissa then an integer exponent (``m * 2**e``); strings
are a length then the bytes; ``bool`` is the ASCII byte ``'1'``/``'0'``; a ``tensor``
(``dlib/dnn/tensor.h``) is version 2, four dims (n, k, nr, nc), then raw little-endian float32;
an ``alias_tensor`` is version 1 and four dims. A network (``dlib/dnn/core.h``) is written by
``add_loss_layer`` (version 1, the loss details, the subnetwork); every ``add_layer`` (version
2), ``add_tag_layer`` and ``add_skip_layer`` (version 1) first writes its version and then its
subnetwork, so the file holds all the versions top-down, then the innermost ``add_layer``
(version 3: the input layer, its details, state) and then, bottom-up, each layer's details
followed by its state (three bools and the x_grad / cached_output / params_grad tensors,
empty in a cleaned net). Tags and skips carry nothing but their version, so the topology
comes from the definition above; the loader checks the order and kind of every layer and
the shape of every parameter against it.

Licence (what the sources say; not legal advice)
------------------------------------------------
* PyPI ``face_recognition_models`` 0.3.0 (Adam Geitgey; ships this ``.dat`` and the 5- and
  68-point shape predictors and the MMOD detector): ``LICENSE`` is the full text of
  "CC0 1.0 Universal"; ``README.rst`` says "These models were created by Davis King
  <https://github.com/davisking/dlib-models> and are licensed in the public domain or under
  CC0 1.0 Universal. See LICENSE."; but ``setup.py`` declares ``license="MIT license"`` and the
  classifier "License :: OSI Approved :: MIT License" (an inconsistency in the package
  metadata).
* dlib-models README (Davis King): "As far as I am concerned, anyone can do whatever they want
  with these model files as I've released them into the public domain." Its section on this
  model describes the training data (FaceScrub, VGG-Face, web-scraped images) but states no
  licence for that data; the same README *does* restrict the 68-point landmark model (iBUG
  300-W data: no commercial use), which this module does not use.
* Caveat for redistribution: the weights were learned from datasets whose own terms
  (VGG-Face, FaceScrub: research use; scraped images of unknown licence) the public-domain
  statement cannot waive, so whether a model derived from these weights may be shipped,
  especially commercially, is a question for legal review. This module ships no weights: it
  reads the user's own copy of the file.

Verified against ``dlib.face_recognition_model_v1.compute_face_descriptor`` (dlib 20.0.1,
``dlib-bin`` wheel) on aligned chips of the repository's sample photos, centre crops and
FER2013 (FERPlus) faces upscaled to 150 px: max abs difference 4.5e-7 (tests/test_dlib_resnet.py).

Usage::

    net = load_dlib_face_resnet(path)               # (B,3,150,150) RGB 0-255 -> (B,128)
    trunk = load_dlib_face_resnet(path, features="pooled")   # -> (B,256)
    trunk = load_dlib_face_resnet(path, features="map")      # -> (B,256,h,w)
    small = load_dlib_face_resnet(path, features="pooled", levels=4)  # 64 px faces -> (B,256)

Inputs are RGB pixel values in [0, 255] (float or uint8), normalised inside the module as
dlib does; pass ``normalize=False`` to feed already-normalised tensors.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustfer.errors import ModelError

__all__ = [
    "DLIB_INPUT_MEAN",
    "DLIB_INPUT_SCALE",
    "DlibFaceResNet",
    "DlibLayer",
    "add_prev",
    "find_dlib_face_model",
    "load_dlib_face_resnet",
    "read_dlib_net",
]

#: ``input_rgb_image_sized<150>``'s per-channel means (R, G, B) in dlib_face_recognition_resnet_model_v1.
DLIB_INPUT_MEAN = (122.782, 117.001, 104.298)
#: dlib divides the mean-subtracted pixel by 256 (``dlib/dnn/input.h``, ``to_tensor``).
DLIB_INPUT_SCALE = 256.0
MODEL_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"

Features = Literal["descriptor", "pooled", "map"]


# ------------------------------------------------------------------------------ architecture
class Affine(nn.Module):
    """dlib's ``affine_`` in CONV_MODE: ``y = gamma[c] * x + beta[c]`` (a frozen batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev_``: sum over the max of both shapes, missing entries counted as zero.

    Channels and rows/columns beyond a tensor's extent are zero (appended at the end /
    bottom / right), as in ``tt::add(dest, src1, src2)`` of ``dlib/dnn/cpu_dlib.cpp``.
    """
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class DlibResBlock(nn.Module):
    """``ares<N>`` (``down=False``) or ``ares_down<N>`` (``down=True``) of dnn_face_recognition_ex.cpp.

    ``block<N,BN,stride> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,x>>>>>`` with
    ``BN = affine``; the skip is the identity (``add_prev1``) or a 2x2/2 average pool of the
    input (``add_prev2<avg_pool<2,2,2,2,skip1<...>>>``); a ReLU follows the sum.
    """

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        stride = 2 if down else 1
        # dlib's con_ default padding: stride != 1 ? 0 : nr/2.
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 0 if down else 1, bias=True)
        self.aff1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=True)
        self.aff2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_prev(y, skip))


#: (channels, number of ``ares`` after the first block, first block is ``ares_down``) for
#: alevel4 .. alevel0, in execution order.
_LEVELS: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),   # alevel4 = ares<32,ares<32,ares<32>>>
    (64, 4, True),    # alevel3 = ares<64,ares<64,ares<64,ares_down<64>>>>
    (128, 3, True),   # alevel2 = ares<128,ares<128,ares_down<128>>>
    (256, 3, True),   # alevel1 = ares<256,ares<256,ares_down<256>>>
    (256, 1, True),   # alevel0 = ares_down<256>
)


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet (``anet_type``), plain PyTorch.

    Args:
        features: what ``forward`` returns: ``"descriptor"`` (B, 128), the dlib face
            descriptor; ``"pooled"`` (B, 256), the globally average-pooled features before the
            fc; ``"map"`` (B, 256, h, w), the last residual level's feature map (a trunk).
        normalize: inputs are RGB pixel values in [0, 255]; the module applies dlib's
            ``(x - mean) / 256``. ``False``: inputs are already normalised.
        levels: residual levels kept (5 = dlib's network; fewer = a shallower trunk without
            the fc, for inputs smaller than 103 px, see :meth:`min_input_size`).

    Attributes:
        num_features: channels of the ``"map"``/``"pooled"`` output (256 at 4-5 levels).
        descriptor_dim: 128.
    """

    descriptor_dim = 128
    #: Output channels after 1..5 residual levels (alevel4 .. alevel0).
    LEVEL_CHANNELS = tuple(c for c, _, _ in _LEVELS)
    #: Smallest square input the full network accepts (alevel0's unpadded 3x3/2 conv needs a
    #: 3x3 input); 150 is what it was trained on. Minimum sizes per ``levels``: see
    #: :meth:`min_input_size`.
    MIN_INPUT_FULL = 103

    def __init__(self, features: Features = "descriptor", normalize: bool = True, levels: int = 5) -> None:
        super().__init__()
        if features not in ("descriptor", "pooled", "map"):
            raise ModelError(f"features must be 'descriptor', 'pooled' or 'map', not {features!r}")
        if not 1 <= levels <= len(_LEVELS):
            raise ModelError(f"levels must be 1..{len(_LEVELS)}, not {levels}")
        if features == "descriptor" and levels != len(_LEVELS):
            raise ModelError("the 128-D descriptor needs all 5 levels; use features='pooled' or 'map'")
        self.features = features
        self.normalize = normalize
        self.register_buffer("input_mean", torch.tensor(DLIB_INPUT_MEAN).view(1, 3, 1, 1))
        self.input_scale = DLIB_INPUT_SCALE
        # stem: max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,input>>>> (no padding anywhere).
        self.conv1 = nn.Conv2d(3, 32, 7, 2, 0, bias=True)
        self.aff1 = Affine(32)
        self.levels = nn.ModuleList()  # alevel4, alevel3, ..., alevel0
        cin = 32
        for cout, n, down in _LEVELS[:levels]:
            blocks = []
            for j in range(n):
                blocks.append(DlibResBlock(cin, cout, down=down and j == 0))
                cin = cout
            self.levels.append(nn.Sequential(*blocks))
        self.num_features = cin
        self.fc = nn.Linear(256, 128, bias=False) if levels == len(_LEVELS) else None  # fc_no_bias<128>

    @staticmethod
    def min_input_size(levels: int = 5) -> int:
        """Smallest square input that runs through ``levels`` levels (5: 103, 4: 55, 3: 31, ...)."""
        def out(s: int) -> int | None:
            s = (s - 7) // 2 + 1
            s = (s - 3) // 2 + 1 if s >= 3 else 0
            for _, _, down in _LEVELS[1:levels]:
                if down:
                    if s < 3:
                        return None
                    s = max((s - 3) // 2 + 1, (s - 2) // 2 + 1)
            return s if s >= 1 else None

        return next(s for s in range(7, 1000) if out(s))

    def truncate(self, levels: int) -> DlibFaceResNet:
        """Keep the first ``levels`` residual levels (drops the fc); in place, returns self."""
        if not 1 <= levels <= len(self.levels):
            raise ModelError(f"levels must be 1..{len(self.levels)}, not {levels}")
        if levels < len(_LEVELS):
            if self.features == "descriptor":
                self.features = "pooled"
            self.fc = None
        self.levels = self.levels[:levels]
        self.num_features = self.LEVEL_CHANNELS[levels - 1]
        return self

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB pixels in [0, 255] -> dlib's normalised input tensor."""
        return (x.float() - self.input_mean) / self.input_scale

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_features, h, w), the output of the last kept level (``alevel0``)."""
        if self.normalize:
            x = self.preprocess(x)
        x = F.max_pool2d(F.relu(self.aff1(self.conv1(x))), 3, 2)
        for level in self.levels:
            x = level(x)
        return x

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_features): ``avg_pool_everything``."""
        return self.forward_map(x).mean(dim=(2, 3))

    def forward_descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 128): dlib's face descriptor (not normalised)."""
        if self.fc is None:
            raise ModelError("this network was truncated; it has no descriptor")
        return self.fc(self.forward_pooled(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.features == "map":
            return self.forward_map(x)
        if self.features == "pooled":
            return self.forward_pooled(x)
        return self.forward_descriptor(x)

    def computational_layers(self) -> list[tuple[str, nn.Module | None, dict[str, Any]]]:
        """The ``add_layer``s of ``anet_type`` bottom-up: (dlib kind, module, expected hyper-parameters).

        The order is that of the layers' details in the serialised file.
        """
        seq: list[tuple[str, nn.Module | None, dict[str, Any]]] = [
            ("con", self.conv1, {"stride": 2, "padding": 0}),
            ("affine", self.aff1, {}),
            ("relu", None, {}),
            ("max_pool", None, {"size": 3, "stride": 2, "padding": 0}),
        ]
        if len(self.levels) != len(_LEVELS) or self.fc is None:
            raise ModelError("load the weights into the full network, then truncate()")
        for blk in (b for level in self.levels for b in level):
            assert isinstance(blk, DlibResBlock)
            seq += [
                ("con", blk.conv1, {"stride": 2 if blk.down else 1, "padding": 0 if blk.down else 1}),
                ("affine", blk.aff1, {}),
                ("relu", None, {}),
                ("con", blk.conv2, {"stride": 1, "padding": 1}),
                ("affine", blk.aff2, {}),
            ]
            if blk.down:
                seq.append(("avg_pool", None, {"size": 2, "stride": 2, "padding": 0}))
            seq += [("add_prev", None, {}), ("relu", None, {})]
        seq += [
            ("avg_pool", None, {"size": 0, "stride": 1, "padding": 0}),  # avg_pool_everything
            ("fc", self.fc, {}),
        ]
        return seq


# ------------------------------------------------------------------------------ file reader
class _Reader:
    """dlib ``serialize()`` primitives (dlib/serialize.h, dlib/dnn/tensor.h)."""

    def __init__(self, data: bytes) -> None:
        self.b = data
        self.o = 0

    def _need(self, n: int) -> None:
        if self.o + n > len(self.b):
            raise ModelError(f"dlib file truncated at byte {self.o} (wanted {n} more)")

    def int(self) -> int:
        self._need(1)
        c = self.b[self.o]
        n = c & 0x0F
        if n > 8 or c & 0x70:
            raise ModelError(f"bad dlib integer header 0x{c:02x} at byte {self.o}")
        self._need(1 + n)
        v = int.from_bytes(self.b[self.o + 1 : self.o + 1 + n], "little")
        self.o += 1 + n
        return -v if c & 0x80 else v

    def peek_int(self) -> tuple[int, int]:
        o = self.o
        try:
            return self.int(), self.o
        finally:
            self.o = o

    def float(self) -> float:
        # float_details: int64 mantissa, int16 exponent -> mantissa * 2**exponent.
        # (inf/nan use reserved exponents; they do not occur in a trained net.)
        m = self.int()
        e = self.int()
        return float(np.ldexp(float(m), e)) if m else 0.0

    def string(self) -> str:
        n = self.int()
        self._need(n)
        s = self.b[self.o : self.o + n]
        self.o += n
        return s.decode("latin-1")

    def bool(self) -> bool:
        self._need(1)
        c = self.b[self.o : self.o + 1]
        self.o += 1
        if c not in (b"0", b"1"):
            raise ModelError(f"bad dlib bool {c!r} at byte {self.o - 1}")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        ver = self.int()
        if ver != 2:
            raise ModelError(f"unsupported dlib tensor version {ver} at byte {self.o}")
        shape = tuple(self.int() for _ in range(4))
        n = int(np.prod(shape))
        self._need(4 * n)
        arr = np.frombuffer(self.b, dtype="<f4", count=n, offset=self.o).reshape(shape).copy()
        self.o += 4 * n
        return arr

    def alias_tensor(self) -> tuple[int, int, int, int]:
        ver = self.int()
        if ver != 1:
            raise ModelError(f"unsupported dlib alias_tensor version {ver} at byte {self.o}")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


@dataclass
class DlibLayer:
    """One computational layer read from a dlib net file."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    tag: str  # the serialisation version string, e.g. "con_4"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    """What :func:`read_dlib_net` found: the loss, the input layer and the layers bottom-up."""

    loss: dict[str, Any]
    input: dict[str, Any]
    layers: list[DlibLayer]
    header_versions: list[int]


def _read_details(r: _Reader) -> DlibLayer:
    tag = r.string()
    if tag == "con_4":  # layers.h con_::serialize
        p: dict[str, Any] = {"params": r.tensor()}
        p["num_filters"], p["nr"], p["nc"] = r.int(), r.int(), r.int()
        p["stride_y"], p["stride_x"], p["padding_y"], p["padding_x"] = r.int(), r.int(), r.int(), r.int()
        p["filters"], p["biases"] = r.alias_tensor(), r.alias_tensor()
        p["multipliers"] = [r.float() for _ in range(4)]  # lr, wd, bias lr, bias wd
        return DlibLayer("con", tag, p)
    if tag == "affine_":  # layers.h affine_::serialize
        p = {"params": r.tensor(), "gamma": r.alias_tensor(), "beta": r.alias_tensor(), "mode": r.int()}
        return DlibLayer("affine", tag, p)
    if tag == "relu_":
        return DlibLayer("relu", tag)
    if tag == "add_prev_":
        return DlibLayer("add_prev", tag)
    if tag in ("max_pool_2", "avg_pool_2"):  # layers.h max_pool_/avg_pool_::serialize
        keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return DlibLayer(tag[:-2], tag, {k: r.int() for k in keys})
    if tag == "fc_2":  # layers.h fc_::serialize
        p = {"num_outputs": r.int(), "num_inputs": r.int(), "params": r.tensor()}
        p["weights"], p["biases"], p["bias_mode"] = r.alias_tensor(), r.alias_tensor(), r.int()
        p["multipliers"] = [r.float() for _ in range(4)]
        return DlibLayer("fc", tag, p)
    raise ModelError(f"unsupported dlib layer {tag!r} at byte {r.o}")


def read_dlib_net(path: str | os.PathLike[str]) -> DlibNet:
    """Parse a serialised dlib ``loss_metric`` network (e.g. dlib_face_recognition_resnet_model_v1.dat).

    Generic over the chain of ``add_layer``/tag/skip layers; understands the layer kinds of
    the face-recognition ResNet (see the module docstring for the format).

    Raises:
        ModelError: on an unknown version or layer, a truncated file or trailing bytes.
    """
    r = _Reader(Path(path).read_bytes())
    if r.int() != 1:  # add_loss_layer::serialize, version 1
        raise ModelError("not a dlib add_loss_layer (version 1) file")
    loss_tag = r.string()
    if loss_tag != "loss_metric_2":
        raise ModelError(f"unsupported dlib loss {loss_tag!r}")
    loss = {"tag": loss_tag, "margin": r.float(), "dist_thresh": r.float()}
    # Versions of add_layer (2) / add_tag_layer, add_skip_layer (1), top-down, until the
    # innermost add_layer<LAYER, INPUT_LAYER> (version 2 or 3) whose input layer's name follows.
    header: list[int] = []
    while True:
        v = r.int()
        n, after = r.peek_int()
        if 0 < n < 64 and r.b[after : after + n].startswith(b"input"):
            inner_version = v
            break
        if v not in (1, 2):
            raise ModelError(f"unexpected dlib layer version {v} at byte {r.o}")
        header.append(v)
    if inner_version not in (2, 3):
        raise ModelError(f"unsupported innermost add_layer version {inner_version}")
    in_tag = r.string()
    if in_tag not in ("input_rgb_image_sized", "input_rgb_image"):
        raise ModelError(f"unsupported dlib input layer {in_tag!r}")
    inp: dict[str, Any] = {"tag": in_tag, "avg": (r.float(), r.float(), r.float())}
    if in_tag == "input_rgb_image_sized":
        inp["nr"], inp["nc"] = r.int(), r.int()
    layers = [_read_details(r)]
    r.bool(), r.bool(), r.bool()  # this_layer_setup_called, gradient_input_is_stale, ..._disabled
    r.tensor(), r.tensor(), r.tensor()  # x_grad, cached_output, grad_final
    if inner_version == 3:
        r.int()  # _sample_expansion_factor
    add_layer_version = 2 if 2 in header else 1
    while r.o < len(r.b):
        layers.append(_read_details(r))
        r.bool(), r.bool(), r.bool()
        r.tensor(), r.tensor()  # x_grad, cached_output
        if add_layer_version == 2:
            r.tensor()  # params_grad
    if header.count(add_layer_version) != len(layers) - 1 and add_layer_version == 2:
        raise ModelError(
            f"dlib file has {header.count(2)} add_layer headers but {len(layers) - 1} layers above the input"
        )
    return DlibNet(loss=loss, input=inp, layers=layers, header_versions=header)


# ------------------------------------------------------------------------------ loading
def _fill(model: DlibFaceResNet, net: DlibNet) -> None:
    expected = model.computational_layers()
    if len(expected) != len(net.layers):
        raise ModelError(f"dlib file has {len(net.layers)} layers, the architecture {len(expected)}")
    for i, ((kind, mod, hp), layer) in enumerate(zip(expected, net.layers)):
        where = f"layer {i} ({layer.tag})"
        if layer.kind != kind:
            raise ModelError(f"{where}: expected a {kind} layer")
        p = layer.params
        if kind == "con":
            assert isinstance(mod, nn.Conv2d)
            w_shape = tuple(mod.weight.shape)
            if (p["filters"] != w_shape or p["stride_y"] != hp["stride"] or p["stride_x"] != hp["stride"]
                    or p["padding_y"] != hp["padding"] or p["padding_x"] != hp["padding"]):
                raise ModelError(f"{where}: {p['filters']} stride {p['stride_y']} pad {p['padding_y']} "
                                 f"!= {w_shape} stride {hp['stride']} pad {hp['padding']}")
            flat = p["params"].reshape(-1)
            nw = int(np.prod(w_shape))
            if flat.size != nw + w_shape[0]:
                raise ModelError(f"{where}: {flat.size} parameters, expected {nw + w_shape[0]}")
            # params = [filters (num_filters, k, nr, nc) row-major | biases (num_filters)]
            mod.weight.data.copy_(torch.from_numpy(flat[:nw].reshape(w_shape)))
            assert mod.bias is not None
            mod.bias.data.copy_(torch.from_numpy(flat[nw:]))
        elif kind == "affine":
            assert isinstance(mod, Affine)
            k = mod.weight.numel()
            flat = p["params"].reshape(-1)
            if p["mode"] != 0 or flat.size != 2 * k or p["gamma"] != (1, k, 1, 1):
                raise ModelError(f"{where}: mode {p['mode']} gamma {p['gamma']}, "
                                 f"expected CONV_MODE (1,{k},1,1)")
            mod.weight.data.copy_(torch.from_numpy(flat[:k]))
            mod.bias.data.copy_(torch.from_numpy(flat[k:]))
        elif kind in ("max_pool", "avg_pool"):
            got = (p["nr"], p["nc"], p["stride_y"], p["stride_x"], p["padding_y"], p["padding_x"])
            want = (hp["size"], hp["size"], hp["stride"], hp["stride"], hp["padding"], hp["padding"])
            if got != want:
                raise ModelError(f"{where}: (nr,nc,sy,sx,py,px) {got} != {want}")
        elif kind == "fc":
            assert isinstance(mod, nn.Linear)
            n_out, n_in = mod.weight.shape
            if (p["num_outputs"], p["num_inputs"], p["bias_mode"]) != (n_out, n_in, 1):  # FC_NO_BIAS = 1
                raise ModelError(f"{where}: fc {p['num_inputs']}->{p['num_outputs']} "
                                 f"bias_mode {p['bias_mode']}")
            # out = x * W, W of shape (num_inputs, num_outputs) (tt::gemm in fc_::forward)
            w = p["params"].reshape(-1)[: n_in * n_out].reshape(n_in, n_out)
            mod.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))


def load_dlib_face_resnet(
    path: str | os.PathLike[str] | None = None,
    features: Features = "descriptor",
    normalize: bool = True,
    levels: int = 5,
) -> DlibFaceResNet:
    """Build :class:`DlibFaceResNet` and fill it from dlib's ``.dat`` file (eval mode).

    Args:
        path: ``dlib_face_recognition_resnet_model_v1.dat``; ``None``: :func:`find_dlib_face_model`.
        features: ``"descriptor"`` (B,128), ``"pooled"`` (B,256) or ``"map"`` (B,256,h,w).
        normalize: the module normalises RGB [0,255] input with the file's channel means / 256.
        levels: keep only the first ``levels`` residual levels (a shallower trunk for small
            inputs: the full network needs at least 103x103 px, 4 levels 55 px, 3 levels 31 px;
            see :meth:`DlibFaceResNet.min_input_size`); below 5 there is no descriptor.

    Raises:
        ModelError: when the file is missing or does not match the architecture.
    """
    p = Path(path) if path is not None else find_dlib_face_model()
    if p is None or not p.is_file():
        raise ModelError(f"dlib face recognition model not found ({path or MODEL_FILENAME}); "
                         "pip install face_recognition_models or download it from dlib.net/files")
    net = read_dlib_net(p)
    if net.input["tag"] != "input_rgb_image_sized" or (net.input["nr"], net.input["nc"]) != (150, 150):
        raise ModelError(f"unexpected input layer {net.input}")
    if features == "descriptor" and levels != len(_LEVELS):
        raise ModelError("the 128-D descriptor needs all 5 levels; use features='pooled' or 'map'")
    model = DlibFaceResNet(features=features, normalize=normalize)
    model.input_mean.copy_(torch.tensor(net.input["avg"], dtype=torch.float32).view(1, 3, 1, 1))
    _fill(model, net)
    if levels != len(_LEVELS):
        model.truncate(levels)
    return model.eval()


def find_dlib_face_model() -> Path | None:
    """``$ROBUSTFER_DLIB_FACE_MODEL``, or the file inside an installed ``face_recognition_models``.

    The package is located with ``importlib.util.find_spec`` and not imported: its
    ``__init__`` imports ``pkg_resources``, which recent setuptools no longer provide.
    """
    env = os.environ.get("ROBUSTFER_DLIB_FACE_MODEL")
    if env:
        return Path(env)
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        cand = Path(loc) / "models" / MODEL_FILENAME
        if cand.is_file():
            return cand
    return None

