"""VGGT-Robust (cvlab-kaist RobustVGGT): reject outlier views, then reconstruct the rest.

A first pass scores every view against an anchor view from the last global attention
block: (a) how much attention the anchor's patch queries (after QK-norm, before RoPE)
pay to the view's patches, (b) the mean cosine similarity of the view's output patch
tokens to the anchor's.  Views whose combined score `attn_a * a + cos_a * b` falls below
`rej_thresh` are rejected (never the anchor) and the survivors are reconstructed in a
second pass.  With `use_most_central_as_reference=False` and
`use_anchor_relative_score=False` the scores are those of robust_vggt.py.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.base import ModelOptions
from ..core.options import option
from ..core.result import SceneFromViewsResult
from ..core.types import SceneFromViewsType
from .vggt import ProcessedViews, SceneFromViewsVggt, VggtOptions, build_result


@dataclass(frozen=True)
class VggtRobustOptions(VggtOptions):
    """VGGT's options plus the view-rejection ones (ROS: ``model.<name>``)."""

    attn_a: float = option(0.5, "Weight of the attention score in a view's combined score.", low=0.0, high=1.0)
    cos_a: float = option(0.5, "Weight of the token-cosine score in a view's combined score.", low=0.0, high=1.0)
    rej_thresh: float = option(
        0.4, "Views whose combined score is below this are rejected (never the anchor); rejected views "
        "are neither mapped nor placed.", low=0.0, high=2.0,
    )
    use_most_central_as_reference: bool = option(
        True, "Anchor = the most central view (highest mean token similarity); false: the first view.",
    )
    use_anchor_relative_score: bool = option(
        True, "Scores relative to the anchor's (anchor = 1); false: min-max normalised over the views, "
        "as robust_vggt.py.",
    )


@dataclass
class ViewScores:
    """Per-view scores of the first pass and the decision taken from them."""

    scores: np.ndarray
    attention: np.ndarray
    cosine: np.ndarray
    anchor: int
    rejected: list[int]
    survivors: list[int]


def _min_max(values: torch.Tensor) -> torch.Tensor:
    return (values - values.min()) / (values.max() - values.min() + 1e-6)


def view_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    patch_tokens: torch.Tensor,
    grid_hw: tuple[int, int],
    image_hw: tuple[int, int],
    patch_start_idx: int,
    *,
    attn_a: float,
    cos_a: float,
    rej_thresh: float,
    use_most_central_as_reference: bool,
    use_anchor_relative_score: bool,
) -> ViewScores:
    """Score S views.

    q, k: (1, heads, S*P, head_dim) of the last global block after QK-norm; patch_tokens:
    (S, N, C) its global-attention output patch tokens.  The attention map of each view
    (mean over heads and anchor queries of the softmax over all tokens) is bilinearly
    upsampled to the image, normalised by the min/max over all views' patch maps and
    averaged; the cosine score is the mean pairwise cosine of the view's and the anchor's
    tokens, computed as the dot product of their mean unit tokens.
    """
    frames, num_patches = patch_tokens.shape[:2]
    tokens_per_frame = q.shape[2] // frames
    unit_mean = F.normalize(patch_tokens.float(), p=2, dim=-1).mean(dim=1)  # (S, C)
    similarity = unit_mean @ unit_mean.T  # (S, S): mean pairwise token cosine of every view pair
    if use_most_central_as_reference and frames > 1:
        anchor = int(((similarity.sum(dim=1) - similarity.diagonal()) / (frames - 1)).argmax())
    else:
        anchor = 0
    cosine = similarity[:, anchor]

    start = anchor * tokens_per_frame + patch_start_idx
    queries = q[0, :, start : start + num_patches].float()
    keys = k[0].float()
    scale = 1.0 / math.sqrt(queries.shape[-1])
    attention = torch.zeros(keys.shape[1], dtype=torch.float32, device=keys.device)
    for head in range(queries.shape[0]):  # one head at a time bounds the (queries x tokens) memory
        attention += torch.softmax(queries[head] @ keys[head].T * scale, dim=-1).sum(dim=0)
    attention /= queries.shape[0] * num_patches
    maps = attention.view(frames, tokens_per_frame)[:, patch_start_idx:].reshape(frames, 1, *grid_hw)
    low, high = maps.min(), maps.max()
    spread = high - low if high > low else torch.ones((), device=maps.device)
    upsampled = F.interpolate(maps, size=image_hw, mode="bilinear", align_corners=False)
    attention_score = ((upsampled - low) / spread).mean(dim=(1, 2, 3)).cpu()
    cosine = cosine.cpu()

    if use_anchor_relative_score:
        attention_score = attention_score / attention_score[anchor]
        cosine = cosine / cosine[anchor]
    else:
        attention_score, cosine = _min_max(attention_score), _min_max(cosine)
    combined = attn_a * attention_score + cos_a * cosine
    rejected = [i for i in range(frames) if i != anchor and float(combined[i]) < rej_thresh]
    survivors = [i for i in range(frames) if i not in rejected]
    return ViewScores(combined.numpy(), attention_score.numpy(), cosine.numpy(), anchor, rejected, survivors)


class SceneFromViewsVggtRobust(SceneFromViewsVggt):
    """VGGT with anchor-based outlier-view rejection (two passes)."""

    model_type: ClassVar[SceneFromViewsType] = SceneFromViewsType.VGGT_ROBUST
    options_class: ClassVar[type[ModelOptions]] = VggtRobustOptions
    options: VggtRobustOptions

    def _first_pass(
        self, images: torch.Tensor, frames_chunk_size: int, prediction_mode: str
    ) -> tuple[dict[str, np.ndarray], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Full pass that also captures the last global block's q/k (after QK-norm) and tokens."""
        network = self.network
        attn = network.aggregator.global_blocks[-1].attn
        last = network.cfg.depth - 1
        captured: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Callable[[nn.Module, Any, Any], None]:
            return lambda _module, _inputs, output: captured.__setitem__(name, output[last] if name == "tokens" else output.detach())

        hooks = [
            attn.q_norm.register_forward_hook(keep("q")),
            attn.k_norm.register_forward_hook(keep("k")),
            network.aggregator.register_forward_hook(keep("tokens")),
        ]
        try:
            raw = self._forward(images, frames_chunk_size, prediction_mode)
        finally:
            for hook in hooks:
                hook.remove()
        return raw, captured["q"], captured["k"], captured["tokens"]

    def infer(self, processed: ProcessedViews, **kwargs: Any) -> dict[str, Any]:
        """First pass and view scores; if views are rejected, a second pass on the survivors
        (the anchor first, as VGGT's reference view), returned in input order."""
        opts = self.call_options(kwargs)
        images = processed.images
        raw, q, k, last_tokens = self._first_pass(images, opts.frames_chunk_size, opts.prediction_mode)
        height, width = images.shape[-2:]
        start = self.network.aggregator.patch_start_idx
        dim = self.network.cfg.embed_dim
        scores = view_scores(
            q, k, last_tokens[0, :, start:, dim:],
            (height // self.patch_size, width // self.patch_size), (height, width), start,
            attn_a=opts.attn_a, cos_a=opts.cos_a, rej_thresh=opts.rej_thresh,
            use_most_central_as_reference=opts.use_most_central_as_reference,
            use_anchor_relative_score=opts.use_anchor_relative_score,
        )
        del q, k, last_tokens
        if scores.rejected:
            order = [scores.anchor] + [i for i in scores.survivors if i != scores.anchor]
            second = self._forward(images[order], opts.frames_chunk_size, opts.prediction_mode)
            back = np.argsort([scores.survivors.index(i) for i in order])
            raw = {key: value[back] for key, value in second.items()}
        return {"raw": raw, "scores": scores}

    def postprocess_results(
        self,
        raw: dict[str, Any],
        images: list[np.ndarray],
        processed: ProcessedViews,
        as_pointcloud: bool = True,
        **kwargs: Any,
    ) -> SceneFromViewsResult:
        """As VGGT's, on the surviving views (in input order, frame of the first survivor);
        the result carries rejected_indices, survivor_indices and every view's score."""
        scores: ViewScores = raw["scores"]
        keep = scores.survivors
        survivors = replace(
            processed,
            images=processed.images[keep],
            rgb=[processed.rgb[i] for i in keep],
            valid=[processed.valid[i] for i in keep],
            scales=processed.scales[keep],
            offsets=processed.offsets[keep],
        )
        result = build_result(raw["raw"], survivors, self.call_options(kwargs), as_pointcloud)
        result.rejected_indices = list(scores.rejected)
        result.survivor_indices = list(keep)
        result.view_scores = [float(s) for s in scores.scores]
        result.extras.update(anchor_index=scores.anchor, attention_scores=scores.attention, cosine_scores=scores.cosine)
        return result
