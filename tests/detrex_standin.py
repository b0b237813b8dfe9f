"""A stand-in for detrex's DINO and DINOTransformer, written from what detrex's source does with
its encoder (detrex e244e6c, projects/dino/modeling): the flattening, the valid ratios and
reference points it computes, the keyword call of `self.encoder(...)`, the two-stage projection
and class head it applies to the memory, the `decoder.class_embed` list its DINO assigns, and
the weighted loss dict its DINO returns in training, and the keyword call of each decoder layer's
deformable cross attention (batch-first, reference boxes scaled by the valid ratios, denoising
queries first). Only what the encoder adapter touches; no detrex code. The decoder is reduced to
its cross attentions."""

import torch
import torch.nn.functional as F
from detectron2.structures import ImageList
from torch import nn

from focus_detr.layers import MultiScaleDeformableAttention, PositionEmbeddingSine

STRIDES = (8, 16, 32, 64)


class StandInDecoder(nn.Module):
    def __init__(
        self, num_layers: int = 2, embed_dim: int = 32, num_heads: int = 4, num_points: int = 2
    ):
        super().__init__()
        self.num_layers = num_layers
        self.class_embed = None  # detrex's DINO assigns its heads
        self.cross_attentions = nn.ModuleList(
            [
                MultiScaleDeformableAttention(embed_dim, num_heads, 4, num_points, batch_first=True)
                for _ in range(num_layers)
            ]
        )

    def forward(
        self, query, memory, mask, reference_boxes, spatial_shapes, level_start_index, valid_ratios
    ):
        states = []
        for attention in self.cross_attentions:
            reference = (
                reference_boxes[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[:, None]
            )
            query = attention(
                query,
                None,
                memory,
                None,
                query_pos=None,
                key_padding_mask=mask,
                reference_points=reference,
                spatial_shapes=spatial_shapes,
                level_start_index=level_start_index,
            )
            states.append(query)
        return states


class StandInTransformer(nn.Module):
    def __init__(
        self, encoder, decoder, num_feature_levels=4, two_stage_num_proposals=30, num_dn_queries=6
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.num_feature_levels = num_feature_levels
        self.two_stage_num_proposals = two_stage_num_proposals
        self.num_dn_queries = num_dn_queries
        self.embed_dim = self.encoder.embed_dim
        self.tgt_embed = nn.Embedding(two_stage_num_proposals + num_dn_queries, self.embed_dim)
        self.level_embeds = nn.Parameter(torch.empty(num_feature_levels, self.embed_dim))
        self.enc_output = nn.Linear(self.embed_dim, self.embed_dim)
        self.enc_output_norm = nn.LayerNorm(self.embed_dim)
        for p in self.parameters():  # detrex: xavier on every matrix, the encoder's included
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.normal_(self.level_embeds)

    @staticmethod
    def valid_ratio(mask):
        _, h, w = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1)
        valid_w = (~mask[:, 0, :]).sum(1)
        return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)

    @staticmethod
    def reference_points(spatial_shapes, valid_ratios):
        points = []
        for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h), torch.linspace(0.5, w - 0.5, w), indexing="ij"
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            points.append(torch.stack((ref_x, ref_y), -1))
        return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]

    def forward(self, feats, masks, pos_embeds):
        feat_flatten = torch.cat([f.flatten(2).transpose(1, 2) for f in feats], 1)
        mask_flatten = torch.cat([m.flatten(1) for m in masks], 1)
        pos_flatten = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embeds[i].view(1, 1, -1)
                for i, p in enumerate(pos_embeds)
            ],
            1,
        )
        spatial_shapes = torch.as_tensor([f.shape[-2:] for f in feats], dtype=torch.long)
        level_start_index = torch.cat(
            (spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1])
        )
        valid_ratios = torch.stack([self.valid_ratio(m) for m in masks], 1)
        memory = self.encoder(
            query=feat_flatten,
            key=None,
            value=None,
            query_pos=pos_flatten,
            query_key_padding_mask=mask_flatten,
            spatial_shapes=spatial_shapes,
            reference_points=self.reference_points(spatial_shapes, valid_ratios),
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
        )
        output_memory = self.enc_output_norm(
            self.enc_output(memory.masked_fill(mask_flatten[..., None], 0.0))
        )
        logits = self.decoder.class_embed[self.decoder.num_layers](output_memory)
        topk = logits.max(-1).values.topk(self.two_stage_num_proposals, dim=1).indices
        n = memory.shape[0]
        # reference boxes: dn boxes (fixed here) first, then one box per selected token
        boxes = torch.cat(
            [
                torch.full((n, self.num_dn_queries, 4), 0.3),
                torch.sigmoid(output_memory[..., :4].detach()).gather(
                    1, topk[..., None].expand(-1, -1, 4)
                ),
            ],
            1,
        )
        states = self.decoder(
            self.tgt_embed.weight[None].expand(n, -1, -1),
            memory,
            mask_flatten,
            boxes,
            spatial_shapes,
            level_start_index,
            valid_ratios,
        )
        enc_logits = logits.gather(1, topk[..., None].expand(-1, -1, logits.shape[-1]))
        return memory, enc_logits, states


class StandInDINO(nn.Module):
    def __init__(self, transformer, num_classes=5, embed_dim=32):
        super().__init__()
        self.transformer = transformer
        convs = [nn.Conv2d(3, embed_dim, 8, stride=8)] + [
            nn.Conv2d(embed_dim, embed_dim, 3, stride=2, padding=1) for _ in STRIDES[1:]
        ]
        self.backbone = nn.ModuleList(convs)
        self.position_embedding = PositionEmbeddingSine(embed_dim // 2, normalize=True, offset=-0.5)
        layers = transformer.decoder.num_layers
        self.class_embed = nn.ModuleList(
            [nn.Linear(embed_dim, num_classes) for _ in range(layers + 1)]
        )
        self.transformer.decoder.class_embed = self.class_embed
        self.weight_dict = {"loss_class": 2.0}

    def forward(self, batched_inputs):
        images = ImageList.from_tensors([x["image"].float() / 255 for x in batched_inputs])
        n, _, h, w = images.tensor.shape
        masks = torch.ones(n, h, w, dtype=torch.bool)
        for i, x in enumerate(batched_inputs):
            ih, iw = x["instances"].image_size if self.training else images.image_sizes[i]
            masks[i, :ih, :iw] = False
        feats, level_masks, pos = [], [], []
        x = images.tensor
        for conv in self.backbone:
            x = conv(x)
            feats.append(x)
            m = F.interpolate(masks[None].float(), size=x.shape[-2:]).bool()[0]
            level_masks.append(m)
            pos.append(self.position_embedding(m))
        memory, enc_logits, states = self.transformer(feats, level_masks, pos)
        if self.training:
            layer_logits = [head(x) for head, x in zip(self.class_embed, states)]
            loss_dict = {
                "loss_class": enc_logits.sigmoid().mean()
                + sum(x.sigmoid().mean() for x in layer_logits)
            }
            for k in loss_dict:
                if k in self.weight_dict:
                    loss_dict[k] *= self.weight_dict[k]
            return loss_dict
        return memory
