"""The STCN network: key encoder, value encoder, key projection/compression, decoder.

One class serves training and inference (``single_object`` selects stage 0's value encoder with one
mask channel instead of two). The network holds parameters and per-frame computations only; memory
management lives in :mod:`stcn.inference` and the training clip pass in :mod:`stcn.train`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

from stcn.model.decoder import Decoder, DecoderQuery
from stcn.model.encoders import KeyEncoder, ValueEncoder
from stcn.model.modules import KeyProjection


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the network. The defaults are the paper's; ``PRESETS['small']`` is a
    narrow variant for CPU training and demos. A checkpoint records its config (see stcn.weights.io).

    key_backbone: ``resnet50`` (paper; f16/f8/f4 of 1024/512/256 channels) or ``resnet18`` (256/128/64).
    key_dim: key channels. value_dim: value (and f16_thin) channels. decoder_dim: width after the
    decoder's compress block (halved by the first upsampling stage).
    single_object: stage-0 variant whose value encoder sees (image, mask) only.
    """

    key_backbone: str = "resnet50"
    key_dim: int = 64
    value_dim: int = 512
    decoder_dim: int = 512
    single_object: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def with_single_object(self, single_object: bool) -> "ModelConfig":
        return replace(self, single_object=single_object)


PRESETS: dict[str, ModelConfig] = {
    "stcn": ModelConfig(),
    "small": ModelConfig(key_backbone="resnet18", value_dim=128, decoder_dim=128),
}


class KeyFeatures(NamedTuple):
    """encode_key's output for B frames of padded size H x W (H, W multiples of 16).

    For the paper's network: key (B, 64, H/16, W/16); f16_thin (B, 512, H/16, W/16) the query's
    compressed features for the decoder; f16 (B, 1024, H/16, W/16) for the value encoder;
    f8 (B, 512, H/8, W/8); f4 (B, 256, H/4, W/4).
    """

    key: torch.Tensor
    f16_thin: torch.Tensor
    f16: torch.Tensor
    f8: torch.Tensor
    f4: torch.Tensor


def others_sum(masks: torch.Tensor) -> torch.Tensor:
    """For K object masks (K, 1, H, W): the sum of the *other* objects' masks per object, (K, 1, H, W).

    Summed in the original's order (ascending object index) for bit-level fidelity; zeros for K = 1.
    """
    k = masks.shape[0]
    if k == 1:
        return torch.zeros_like(masks)
    return torch.cat([masks[[j for j in range(k) if j != i]].sum(dim=0, keepdim=True) for i in range(k)], dim=0)


class STCN(nn.Module):
    """Space-Time Correspondence Network (Cheng, Tai & Tang, NeurIPS 2021).

    Args:
        config: the hyper-parameters (default: the paper's network).
        single_object: stage-0 variant whose value encoder sees (image, mask) instead of
            (image, mask, others); overrides ``config.single_object`` when given.
        pretrained_backbones: load torchvision's ImageNet weights into both ResNets (training only;
            this downloads them unless they are cached). Inference never needs it.
    """

    def __init__(
        self,
        config: ModelConfig | None = None,
        *,
        single_object: bool | None = None,
        pretrained_backbones: bool = False,
    ) -> None:
        super().__init__()
        config = config or ModelConfig()
        if single_object is not None:
            config = config.with_single_object(single_object)
        self.config = config
        self.single_object = config.single_object
        self.key_encoder = KeyEncoder(config.key_backbone, pretrained=pretrained_backbones)
        f16_dim, f8_dim, f4_dim = self.key_encoder.channels
        self.value_encoder = ValueEncoder(
            key_f16_dim=f16_dim, value_dim=config.value_dim, single_object=config.single_object,
            pretrained=pretrained_backbones,
        )
        self.key_proj = KeyProjection(f16_dim, config.key_dim)
        self.key_comp = nn.Conv2d(f16_dim, config.value_dim, 3, padding=1)
        self.decoder = Decoder(config.value_dim, f8_dim, f4_dim, config.decoder_dim)

    def encode_key(self, image: torch.Tensor) -> KeyFeatures:
        """Normalised, padded frames (B, 3, H, W) -> :class:`KeyFeatures`."""
        f16, f8, f4 = self.key_encoder(image)
        return KeyFeatures(self.key_proj(f16), self.key_comp(f16), f16, f8, f4)

    def encode_value(
        self,
        image: torch.Tensor,
        f16: torch.Tensor,
        mask: torch.Tensor,
        others: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Value of B (frame, object) pairs: image (B, 3, H, W), its key-encoder f16 (B, 1024, h, w),
        the object's mask (B, 1, H, W) and the other objects' summed mask (B, 1, H, W; multi-object
        only) -> (B, 512, h, w)."""
        if not self.single_object and others is None:
            raise ValueError("the multi-object network needs the 'others' mask")
        return self.value_encoder(image, f16, mask, None if self.single_object else others)

    def encode_object_values(self, image: torch.Tensor, f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Values of all K objects of one frame: image (1, 3, H, W), f16 (1, 1024, h, w), masks or
        probabilities (K, 1, H, W) -> (K, 512, h, w). "Others" = sum of the other objects' masks."""
        k = masks.shape[0]
        others = None if self.single_object else others_sum(masks)
        return self.encode_value(image.expand(k, -1, -1, -1), f16.expand(k, -1, -1, -1), masks, others)

    def decode(
        self, readout: torch.Tensor, f16_thin: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        """Memory read-out (B, 512, h, w) + the query's f16_thin, f8, f4 (broadcast over B when their
        batch is 1) -> logits (B, 1, H, W)."""
        b = readout.shape[0]
        if f16_thin.shape[0] != b:
            f16_thin, f8, f4 = (x.expand(b, -1, -1, -1) for x in (f16_thin, f8, f4))
        return self.decoder(readout, f16_thin, f8, f4)

    # ---- split forms for inference: the per-frame part once, the per-object part batched ------------
    def query_features(self, feats: KeyFeatures) -> DecoderQuery:
        """The decoder's object-independent part for one frame (see :meth:`Decoder.query_features`)."""
        return self.decoder.query_features(feats.f16_thin, feats.f8, feats.f4)

    def decode_objects(self, readout: torch.Tensor, query: DecoderQuery) -> torch.Tensor:
        """Logits (O, 1, H, W) from read-outs (O, 512, h, w); equals :meth:`decode` up to float order."""
        return self.decoder.decode_objects(readout, query)

    def encode_object_values_split(
        self, image: torch.Tensor, f16: torch.Tensor, masks: torch.Tensor, others: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`encode_object_values` with the key-feature half of the fuser's first block computed
        once for all objects (:meth:`ValueEncoder.forward_split`): image (1, 3, H, W), f16 (1, C, h, w),
        masks (K, 1, H, W) -> (K, V, h, w). Equal up to float summation order. ``others``: the
        other objects' summed masks (default: :func:`others_sum` of ``masks``; pass it to encode a
        subset of a frame's objects)."""
        k = masks.shape[0]
        if not self.single_object and others is None:
            others = others_sum(masks)
        return self.value_encoder.forward_split(image.expand(k, -1, -1, -1), f16, masks, others)
