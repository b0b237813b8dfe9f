"""Contrastive denoising: group layout, noise, attention mask, and that the decoder honours the
mask (dn groups and matching queries cannot see other groups' answers)."""

import pytest
import torch

from focus_detr.layers import box_cxcywh_to_xyxy, inverse_sigmoid
from focus_detr.modeling import ContrastiveDenoising
from focus_detr.modeling.denoising import DenoisingMeta

from dino_utils import make_batch, tiny_model

C = 8


def targets_of(counts, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "labels": torch.randint(0, k, (n,), generator=g),
            "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]]).repeat(n, 1)
            + torch.rand(n, 4, generator=g) * 0.02,
        }
        for n in counts
    ]


def test_layout_without_noise():
    enc = torch.nn.Embedding(5, C)
    dn = ContrastiveDenoising(
        num_classes=5, num_dn_queries=9, label_noise_ratio=0.0, box_noise_scale=0.0
    )
    targets = targets_of([2, 0, 3])
    content, boxes, mask, meta = dn(targets, enc, num_matching=4)
    assert (meta.num_groups, meta.max_gt, meta.group_size, meta.num_queries) == (3, 3, 6, 18)
    assert content.shape == (3, 18, C) and boxes.shape == (3, 18, 4)
    assert mask.shape == (22, 22) and mask.dtype == torch.bool
    for b, t in enumerate(targets):
        for slot in range(18):
            g, r = divmod(slot, 6)
            obj = r % 3  # positives at r < 3, negatives at r >= 3
            if obj < len(t["labels"]):
                torch.testing.assert_close(content[b, slot], enc.weight[t["labels"][obj]])
                torch.testing.assert_close(boxes[b, slot], inverse_sigmoid(t["boxes"][obj]))
            else:  # padding slots: zero content, box at sigmoid(0) = 0.5
                assert not content[b, slot].any() and not boxes[b, slot].any()
    idx = dn.matched_indices(targets, meta)
    assert idx[0][0].tolist() == [0, 1, 6, 7, 12, 13] and idx[0][1].tolist() == [0, 1] * 3
    assert idx[1][0].numel() == 0
    assert idx[2][0].tolist() == [0, 1, 2, 6, 7, 8, 12, 13, 14]


def test_box_noise_ranges():
    """Positive corners move by [0, 1) x half the size, negatives by [1, 2) x half the size
    (negatives whose corners crossed collapse to the minimal width, as in DINO: skipped)."""
    torch.manual_seed(0)
    enc = torch.nn.Embedding(5, C)
    dn = ContrastiveDenoising(
        num_classes=5, num_dn_queries=200, label_noise_ratio=0.0, box_noise_scale=1.0
    )
    t = [
        {
            "labels": torch.tensor([1, 2]),
            "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.4, 0.6, 0.1, 0.1]]),
        }
    ]
    _, boxes, _, meta = dn(t, enc, 0)
    cxcywh = boxes[0].double().sigmoid().view(meta.num_groups, 2, 2, 4)
    noisy = box_cxcywh_to_xyxy(cxcywh)  # (groups, pos/neg, object, corner)
    clean = box_cxcywh_to_xyxy(t[0]["boxes"].double())
    half = t[0]["boxes"][:, 2:].double().repeat(1, 2) / 2
    rel = (noisy - clean).abs() / half
    tol = 1e-3  # float32 inverse-sigmoid round trip
    assert rel[:, 0].max() < 1 + tol
    assert rel[:, 0].mean() == pytest.approx(0.5, abs=0.05)
    uncrossed = (cxcywh[:, 1, :, 2:] > 0.002).all(-1)  # (groups, object)
    assert uncrossed.float().mean() > 0.2
    neg = rel[:, 1][uncrossed]
    assert neg.min() > 1 - tol and neg.max() < 2 + tol
    assert neg.mean() == pytest.approx(1.5, abs=0.05)


def test_label_noise_rate():
    torch.manual_seed(0)
    enc = torch.nn.Embedding(4, C)
    dn = ContrastiveDenoising(
        num_classes=4, num_dn_queries=2000, label_noise_ratio=0.5, box_noise_scale=0.0
    )
    t = [{"labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    content, _, _, meta = dn(t, enc, 0)
    changed = (content[0] - enc.weight[3]).abs().sum(-1) > 0
    # flipped with probability 0.25 to a uniform class, 1 in 4 of which is the same class
    assert changed.float().mean().item() == pytest.approx(0.25 * 0.75, abs=0.02)
    assert meta.num_queries == 4000


def expected_mask(meta: DenoisingMeta, num_matching):
    d = meta.num_queries
    m = torch.zeros(d + num_matching, d + num_matching, dtype=torch.bool)
    for i in range(d + num_matching):
        for j in range(d):  # only denoising keys are ever hidden
            if i >= d or i // meta.group_size != j // meta.group_size:
                m[i, j] = True
    return m


@pytest.mark.parametrize("groups,max_gt,matching", [(1, 3, 5), (3, 2, 4), (4, 1, 0)])
def test_attention_mask(groups, max_gt, matching):
    meta = DenoisingMeta(num_groups=groups, max_gt=max_gt)
    mask = ContrastiveDenoising().attention_mask(meta, matching)
    assert torch.equal(mask, expected_mask(meta, matching))


def test_disabled_or_no_objects():
    enc = torch.nn.Embedding(5, C)
    assert ContrastiveDenoising(5, num_dn_queries=0)(targets_of([2]), enc, 10) is None
    assert ContrastiveDenoising(5)(targets_of([0, 0]), enc, 10) is None
    assert ContrastiveDenoising(5, num_dn_queries=1)(targets_of([3]), enc, 1)[3].num_groups == 1


def test_decoder_honours_the_mask():
    """Changing group 1's denoising queries changes group 1's outputs only: the matching queries
    and group 0 cannot see them."""
    model = tiny_model(num_classes=5, num_queries=30).eval()
    batch = make_batch([(96, 128), (64, 96)], [2, 1], 5)
    images = model.preprocess_image(batch)
    targets = model.prepare_targets(batch)
    torch.manual_seed(0)
    queries = model.denoising(targets, model.label_enc, 30)
    content, boxes, mask, meta = queries
    assert queries.content is content and queries.attention_mask is mask and queries.meta is meta
    assert queries.boxes.shape == (2, meta.num_queries, 4)

    def run(content, boxes):
        with torch.no_grad():
            features = model.neck(model.backbone(images.tensor))
            pad = model.padding_mask(images)
            masks = [
                torch.nn.functional.interpolate(pad[None].float(), size=f.shape[-2:]).bool()[0]
                for f in features
            ]
            pos = [model.position_embedding(m) for m in masks]
            return model.transformer(features, masks, pos, (content, boxes), mask)

    base = run(content, boxes)
    g1 = slice(meta.group_size, 2 * meta.group_size)
    content2, boxes2 = content.clone(), boxes.clone()
    content2[:, g1] += torch.randn_like(content2[:, g1])
    boxes2[:, g1] += 0.3
    changed = run(content2, boxes2)
    d = meta.num_queries
    keep = torch.ones(d + 30, dtype=torch.bool)
    keep[g1] = False
    assert torch.equal(base["logits"][:, :, keep], changed["logits"][:, :, keep])
    assert torch.equal(base["boxes"][:, :, keep], changed["boxes"][:, :, keep])
    assert not torch.equal(base["logits"][:, :, g1], changed["logits"][:, :, g1])
