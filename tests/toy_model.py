"""A tiny dense detector for tests of the data and training machinery (not a DETR).

Four stride-2 convolutions, then per location of the stride-16 map: class logits (sigmoid focal
loss; a location is positive for the smallest ground-truth box containing its centre) and
log-space distances to the box sides (L1). At inference the top-k (location, class) scores give
boxes. Returns detectron2 `Instances`, so `COCOEvaluator` can evaluate it.

`crash_after_steps=n` raises in the (n+1)-th training forward: a simulated crash for resume tests.
`loss_log=path` appends each training step's total loss (repr of the float) to that file ("RANK"
in the path is replaced by the process's rank).
"""

import os

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn
from torchvision.ops import sigmoid_focal_loss


class ToyDetector(nn.Module):
    def __init__(
        self,
        num_classes=6,
        channels=16,
        topk=100,
        crash_after_steps=-1,
        loss_log="",
        pixel_mean=(123.675, 116.28, 103.53),
        pixel_std=(58.395, 57.12, 57.375),
    ):
        super().__init__()
        self.crash_after_steps, self._steps = crash_after_steps, 0
        self.loss_log = loss_log
        self.num_classes, self.topk, self.stride = num_classes, topk, 16
        c = channels
        layers, cin = [], 3
        for cout in (c, c, 2 * c, 2 * c):
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                nn.GroupNorm(4, cout),
                nn.ReLU(),
            ]
            cin = cout
        self.backbone = nn.Sequential(*layers)
        self.cls_head = nn.Conv2d(cin, num_classes, 1)
        self.box_head = nn.Conv2d(cin, 4, 1)
        nn.init.constant_(self.cls_head.bias, -4.0)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), False)

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs):
        images = [
            (x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
            for x in batched_inputs
        ]
        images = ImageList.from_tensors(images, self.stride)
        feat = self.backbone(images.tensor)
        logits, reg = self.cls_head(feat), self.box_head(feat)  # (N, K, H, W), (N, 4, H, W)
        n, _, h, w = logits.shape
        ys = (torch.arange(h, device=self.device) + 0.5) * self.stride
        xs = (torch.arange(w, device=self.device) + 0.5) * self.stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx.flatten(), cy.flatten()], 1)  # (HW, 2)
        logits = logits.flatten(2).transpose(1, 2)  # (N, HW, K)
        reg = reg.flatten(2).transpose(1, 2)  # (N, HW, 4) log(ltrb / stride)
        if self.training:
            if self._steps == self.crash_after_steps:
                raise RuntimeError(f"ToyDetector: simulated crash after {self._steps} steps")
            self._steps += 1
            losses = self.losses(
                logits, reg, centres, [x["instances"].to(self.device) for x in batched_inputs]
            )
            if self.loss_log:
                rank = os.environ.get("RANK", "0")
                with open(self.loss_log.replace("RANK", rank), "a") as f:
                    f.write(repr(float(sum(losses.values()))) + "\n")
            return losses
        ltrb = reg.clamp(max=8).exp() * self.stride
        boxes = torch.cat([centres - ltrb[..., :2], centres + ltrb[..., 2:]], -1)
        scores = logits.sigmoid().flatten(1)  # (N, HW*K)
        k = min(self.topk, scores.shape[1])
        top, idx = scores.topk(k, dim=1)
        results = []
        for i, x in enumerate(batched_inputs):
            inst = Instances(images.image_sizes[i])
            inst.pred_boxes = Boxes(boxes[i, idx[i] // self.num_classes])
            inst.pred_boxes.clip(images.image_sizes[i])
            inst.scores = top[i]
            inst.pred_classes = idx[i] % self.num_classes
            height, width = (
                x.get("height", images.image_sizes[i][0]),
                x.get("width", images.image_sizes[i][1]),
            )
            results.append({"instances": detector_postprocess(inst, height, width)})
        return results

    def losses(self, logits, reg, centres, targets):
        cls_target = torch.zeros_like(logits)
        box_loss, num_pos = logits.new_zeros(()), 0
        for i, t in enumerate(targets):
            gt = t.gt_boxes.tensor
            if not len(gt):
                continue
            inside = (
                (centres[:, None, 0] > gt[None, :, 0])
                & (centres[:, None, 0] < gt[None, :, 2])
                & (centres[:, None, 1] > gt[None, :, 1])
                & (centres[:, None, 1] < gt[None, :, 3])
            )
            area = t.gt_boxes.area()[None].expand_as(inside).masked_fill(~inside, float("inf"))
            best_area, best = area.min(1)
            pos = torch.isfinite(best_area)
            cls_target[i, pos, t.gt_classes[best[pos]]] = 1.0
            g = gt[best[pos]]
            c = centres[pos]
            target = torch.stack(
                [c[:, 0] - g[:, 0], c[:, 1] - g[:, 1], g[:, 2] - c[:, 0], g[:, 3] - c[:, 1]], 1
            )
            box_loss = box_loss + (reg[i, pos] - (target / self.stride).log()).abs().sum()
            num_pos += int(pos.sum())
        norm = max(num_pos, 1)
        cls_loss = sigmoid_focal_loss(logits, cls_target, reduction="sum") / norm
        return {"loss_cls": cls_loss, "loss_box": box_loss / norm + 0.0 * reg.sum()}
