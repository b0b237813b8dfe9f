"""The DINO detector as a detectron2 meta-architecture (LazyConfig or yacs `META_ARCH_REGISTRY`)."""

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from ...layers import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from ...layers.graph_capture import capturing_dynamic_shapes
from ...engine.published_checkpoints import accept_published_keys
from ..transformer.multiscale import valid_sizes
from .dino_config import dino_kwargs_from_cfg

__all__ = ["DINO"]


@META_ARCH_REGISTRY.register()
class DINO(nn.Module):
    """DINO: backbone -> neck -> sine positions -> `transformer` (encoder, two-stage query
    selection, decoder) -> set losses in training, top-k (query, class) detections in inference.

    Padding is masked in the transformer, in training and inference: padded tokens are never
    kept, scored, attended to or selected as queries, so what the padded region holds changes no
    output. The padded size itself still reaches the decoder, as in the published model: its
    query positions embed the reference boxes scaled into the padded frame (valid ratios), so an
    image's decoder outputs in a batch differ slightly from the same image alone (published
    checkpoints are trained that way).

    The constructor only builds the model; the inference transforms (the backbone's norms
    folded into its convolutions, reduced precision) are a step of their own, applied to the
    built model by `focus_detr.modeling.optimize` (`instantiate_model` applies them with a
    config's `model.fold_backbone_norms` / `model.reduced_precision` keys).

    Args:
        backbone: detectron2 `Backbone` (dict of feature maps).
        position_embedding: maps an (N, H, W) padding mask to (N, C, H, W) positions.
        neck: maps the backbone dict to a list of (N, C, H_l, W_l) levels (`strides` attribute
            optional, handed to the encoder).
        transformer: a `DINOTransformer`.
        criterion: a `DINOCriterion` (returns weighted losses).
        denoising: a `ContrastiveDenoising`, or None for no denoising queries.
        num_classes: classes (must match the decoder's heads).
        pixel_mean, pixel_std: input normalization, in `input_format` channel order.
        select_box_nums_for_evaluation: detections kept per image (top over queries x classes).
            Default 300.
        input_format: channel order of the input images ("RGB" or "BGR"), as the data mapper
            reads them (`img_format`); an attribute as in detectron2's models (for code that
            draws the inputs): the images are not converted, `pixel_mean`/`pixel_std` must be
            given in this order. Default "RGB".
        size_divisibility: pad the batch to a multiple of this. Default 0.
        aux_loss: supervise every decoder layer. Default True.
        return_token_selection: in inference, also return each image's token selection of a
            sparse encoder (Focus, Sparse DETR) as ``"token_selection"``, a `TokenSelection` of
            one image (`TokenSelection.per_image`), for `TokenSelectionEvaluator`. Default False.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        position_embedding: nn.Module,
        neck: nn.Module,
        transformer: nn.Module,
        criterion: nn.Module,
        denoising: Optional[nn.Module] = None,
        num_classes: int = 80,
        pixel_mean: Sequence[float] = (123.675, 116.280, 103.530),
        pixel_std: Sequence[float] = (58.395, 57.120, 57.375),
        select_box_nums_for_evaluation: int = 300,
        input_format: str = "RGB",
        size_divisibility: int = 0,
        aux_loss: bool = True,
        return_token_selection: bool = False,
    ):
        super().__init__()
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        decoder = transformer.decoder
        if decoder.num_classes != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the decoder heads predict "
                f"{decoder.num_classes} classes"
            )
        if getattr(criterion, "num_classes", num_classes) != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the criterion was built for "
                f"{criterion.num_classes} classes"
            )
        if denoising is not None and denoising.num_classes != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the denoising queries draw noise "
                f"labels from {denoising.num_classes} classes"
            )
        self._check_parts_fit(position_embedding, neck, transformer)
        self.backbone = backbone
        self.position_embedding = position_embedding
        self.neck = neck
        self.transformer = transformer
        # the decoder's heads, registered here too: detrex checkpoints hold both names
        self.class_embed = decoder.class_embed
        self.bbox_embed = decoder.bbox_embed
        self.label_enc = nn.Embedding(num_classes, transformer.embed_dim)
        self.criterion = criterion
        self.denoising = denoising
        self.num_classes = num_classes
        self.select_box_nums_for_evaluation = select_box_nums_for_evaluation
        self.input_format = input_format
        self.size_divisibility = size_divisibility
        self.aux_loss = aux_loss
        self.return_token_selection = return_token_selection
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        # published (detrex) checkpoint names load through any loader, not only ours
        accept_published_keys(self)

    @staticmethod
    def _check_parts_fit(
        position_embedding: nn.Module, neck: nn.Module, transformer: nn.Module
    ) -> None:
        """Config mistakes that would otherwise fail deep in the first forward pass."""
        embed_dim = transformer.embed_dim
        if hasattr(neck, "output_shape"):
            shapes = neck.output_shape()
            if len(shapes) != transformer.num_feature_levels:
                raise ValueError(
                    f"the neck outputs {len(shapes)} levels but the transformer has "
                    f"num_feature_levels={transformer.num_feature_levels}"
                )
            channels = sorted({s.channels for s in shapes})
            if channels != [embed_dim]:
                raise ValueError(
                    f"the neck outputs {channels} channels but the transformer's "
                    f"embed_dim is {embed_dim}"
                )
        feats = getattr(position_embedding, "num_pos_feats", None)
        if feats is not None and 2 * feats != embed_dim:
            raise ValueError(
                f"position_embedding.num_pos_feats={feats} gives {2 * feats} "
                f"channels (x and y), the transformer's embed_dim is {embed_dim}"
            )

    @classmethod
    def from_config(cls, cfg):
        return dino_kwargs_from_cfg(cfg)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ---- inputs ------------------------------------------------------------------------------
    def preprocess_image(self, batched_inputs: List[Dict[str, Any]]) -> ImageList:
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.size_divisibility)

    @staticmethod
    def padding_mask(images: ImageList) -> torch.Tensor:
        """(N, H, W) bool, True outside each image's own size."""
        if capturing_dynamic_shapes():
            # a graph of dynamic size serves unpadded batches; image_sizes holds the traced sizes,
            # which as_tensor below would bake in
            return torch.zeros_like(images.tensor[:, 0], dtype=torch.bool)
        n, _, h, w = images.tensor.shape
        sizes = torch.as_tensor(images.image_sizes, device=images.tensor.device).view(n, 2, 1, 1)
        rows = torch.arange(h, device=sizes.device).view(1, h, 1) >= sizes[:, 0]
        cols = torch.arange(w, device=sizes.device).view(1, 1, w) >= sizes[:, 1]
        return rows | cols

    def prepare_targets(
        self, batched_inputs: List[Dict[str, Any]]
    ) -> List[Dict[str, torch.Tensor]]:
        """Per image: labels (n,), boxes (n, 4) cxcywh normalized by the image size,
        boxes_xyxy (n, 4) in input pixels, image_size (2,) (h, w)."""
        targets = []
        for x in batched_inputs:
            inst = x["instances"].to(self.device)
            h, w = inst.image_size
            xyxy = inst.gt_boxes.tensor.float()
            scale = xyxy.new_tensor([w, h, w, h])
            targets.append(
                {
                    "labels": inst.gt_classes.long(),
                    "boxes": box_xyxy_to_cxcywh(xyxy / scale),
                    "boxes_xyxy": xyxy,
                    "image_size": torch.as_tensor([h, w], device=self.device),
                }
            )
        self._check_targets(targets, batched_inputs)
        return targets

    def _check_targets(
        self, targets: List[Dict[str, torch.Tensor]], batched_inputs: List[Dict[str, Any]]
    ) -> None:
        """Raise on a box that is not finite or has no positive width and height, or a label
        outside [0, num_classes): the losses would be meaningless (a negative GIoU loss) or fail
        without naming the image. `DetrDatasetMapper` drops such boxes; other mappers may not.
        One check for the whole batch."""
        boxes = torch.cat([t["boxes_xyxy"] for t in targets])
        labels = torch.cat([t["labels"] for t in targets])
        bad = (
            ~torch.isfinite(boxes).all(-1)
            | (boxes[:, 2] <= boxes[:, 0])
            | (boxes[:, 3] <= boxes[:, 1])
            | (labels < 0)
            | (labels >= self.num_classes)
        )
        if not bool(bad.any()):
            return
        first = int(bad.nonzero()[0, 0])
        counts = torch.tensor([len(t["labels"]) for t in targets]).cumsum(0)
        image = int((counts <= first).sum())
        name = batched_inputs[image].get("file_name", "")
        raise ValueError(
            f"image {image} of the batch{f' ({name})' if name else ''}: ground-truth box "
            f"{boxes[first].tolist()} (x0, y0, x1, y1) with label {int(labels[first])}: boxes "
            f"must be finite with x1 > x0 and y1 > y0, labels in [0, {self.num_classes})"
        )

    # ---- network -----------------------------------------------------------------------------
    def compute_outputs(
        self,
        images: ImageList,
        targets: Optional[List[Dict[str, torch.Tensor]]] = None,
        return_sampling: bool = False,
    ) -> Dict[str, Any]:
        """Runs the network. With `targets` (training) adds denoising queries.

        Returns the transformer's dict plus: pred_logits (N, Q, K), pred_boxes (N, Q, 4) of the
        last layer, aux_outputs, enc_outputs, neck_features, level_masks, and when denoising ran
        dn_outputs (same structure) and dn_meta.
        """
        mask = self.padding_mask(images)
        if self.training:
            self._check_input_size(images, mask)
        features = self.neck(self.backbone(images.tensor))
        level_masks = [
            F.interpolate(mask[None].float(), size=f.shape[-2:]).bool()[0] for f in features
        ]
        pos = [self.position_embedding(m) for m in level_masks]
        dn = None
        if targets is not None and self.denoising is not None:
            dn = self.denoising(targets, self.label_enc, self.transformer.num_queries)
        encoder = self.transformer.encoder
        return_sampling = return_sampling or (
            self.training and getattr(encoder, "needs_decoder_sampling", False)
        )
        out = self.transformer(
            features,
            level_masks,
            pos,
            dn_queries=None if dn is None else (dn.content, dn.boxes),
            self_attn_mask=None if dn is None else dn.attention_mask,
            strides=getattr(self.neck, "strides", None),
            return_sampling=return_sampling,
        )
        out["neck_features"] = features
        out["level_masks"] = level_masks
        d = 0 if dn is None else dn.meta.num_queries
        out.update(self._heads_output(out["logits"][:, :, d:], out["boxes"][:, :, d:]))
        out["enc_outputs"] = {"pred_logits": out["enc_logits"], "pred_boxes": out["enc_boxes"]}
        if dn is not None:
            out["dn_outputs"] = self._heads_output(out["logits"][:, :, :d], out["boxes"][:, :, :d])
            out["dn_meta"] = dn.meta
        return out

    def _check_input_size(self, images: ImageList, mask: torch.Tensor) -> None:
        """The transformer's query-budget check, on the level sizes that the neck's strides
        predict, before the backbone runs: in training a too small image would otherwise fail
        in a norm layer ("Expected more than 1 value per channel") without naming the image.
        Skipped when the neck does not tell its strides (the transformer still checks)."""
        strides = getattr(self.neck, "strides", None)
        check = getattr(self.transformer, "check_query_budget", None)
        if not strides or check is None:
            return
        h, w = images.tensor.shape[-2:]
        masks = [
            F.interpolate(mask[None].float(), size=(-(-h // s), -(-w // s))).bool()[0]
            for s in strides
        ]
        check(valid_sizes(masks))

    def _heads_output(self, logits: torch.Tensor, boxes: torch.Tensor) -> Dict[str, Any]:
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])
            ]
        return out

    def forward(self, batched_inputs: List[Dict[str, Any]]):
        """Args:
            batched_inputs: detectron2 dicts: "image" (C, H, W) in `input_format`, in training
                "instances" (gt_boxes, gt_classes), optionally "height"/"width" (output size).
        Returns:
            training: dict of weighted losses (including the encoder's own losses, if any);
            inference: list of {"instances": Instances} (pred_boxes in output pixels, scores,
            pred_classes), top `select_box_nums_for_evaluation` by score.
        """
        images = self.preprocess_image(batched_inputs)
        if not self.training:
            outputs = self.compute_outputs(images)
            results = self.postprocess(
                outputs["pred_logits"], outputs["pred_boxes"], images.image_sizes, batched_inputs
            )
            if self.return_token_selection:
                self._attach_token_selection(results, outputs)
            return results
        targets = self.prepare_targets(batched_inputs)
        outputs = self.compute_outputs(images, targets)
        dn_meta = outputs.get("dn_meta")
        losses = self.criterion(
            outputs,
            targets,
            outputs.get("dn_outputs"),
            dn_meta,
            None if dn_meta is None else self.denoising.matched_indices(targets, dn_meta),
        )
        if dn_meta is None:  # keep label_enc in the graph (distributed training)
            losses["loss_class_dn"] = losses["loss_class_dn"] + 0.0 * self.label_enc.weight.sum()
        encoder_losses = getattr(self.transformer.encoder, "losses", None)
        if encoder_losses is not None:
            losses.update(encoder_losses(outputs, targets))
        return losses

    # ---- outputs -----------------------------------------------------------------------------
    @staticmethod
    def _attach_token_selection(results: List[Dict], outputs: Dict[str, Any]):
        """Adds ``"token_selection"`` (image i's `TokenSelection`) to each result when the
        encoder selects tokens (a dense encoder keeps all: nothing to add)."""
        selection = outputs["encoder_output"].selection
        if selection is not None:
            for i, result in enumerate(results):
                result["token_selection"] = selection.per_image(i)

    def postprocess(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        image_sizes,
        batched_inputs: Optional[List[Dict[str, Any]]] = None,
    ) -> List[Dict]:
        """Top-k (query, class) pairs by sigmoid score; boxes scaled to each image's input size,
        then (detector_postprocess) to its requested "height"/"width" and clipped."""
        n, q, k = logits.shape
        scores, index = (
            logits.sigmoid().flatten(1).topk(min(self.select_box_nums_for_evaluation, q * k), dim=1)
        )
        query, labels = index // k, index % k
        sizes = torch.as_tensor(image_sizes, dtype=boxes.dtype, device=boxes.device)  # (h, w)
        scale = sizes[:, [1, 0, 1, 0]][:, None]
        xyxy = box_cxcywh_to_xyxy(boxes.gather(1, query[..., None].expand(-1, -1, 4))) * scale
        results = []
        for i, size in enumerate(image_sizes):
            r = Instances(tuple(size))
            r.pred_boxes = Boxes(xyxy[i])
            r.scores = scores[i]
            r.pred_classes = labels[i]
            x = batched_inputs[i] if batched_inputs is not None else {}
            results.append(
                {
                    "instances": detector_postprocess(
                        r, x.get("height", size[0]), x.get("width", size[1])
                    )
                }
            )
        return results
