"""Focus-DETR-R50 reproduces the published (detrex) model's outputs, stage by stage, on synthesized
weights: foreground logits, keep counts, kept and object token sets of every encoder layer, encoder
output, proposals (as sets), decoder rows keyed by proposal token, detections (as sets).

Reference: tests/fixtures/focus_detr_r50_reference.pt, copied from the shared fixture by
projects/focus_detr/tools/make_test_fixture.py; tolerances from the fixture's README (measured
perturbation of the reference itself x ~10-100). Also: the published key list loads with no
missing or unexpected keys, and in a mixed-size batch padding changes no output of valid images.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import LazyConfig

from focus_detr.engine.published_checkpoints import apply_key_aliases
from focus_detr.modeling import instantiate_model
from reference_keys import load_synthesized, read_key_shapes

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "projects/focus_detr/configs/models/focus_detr_r50.py"
KEYS = "focus_detr_r50_detrex_keys.tsv"


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURES / "focus_detr_r50_reference.pt", weights_only=True)


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    """This module's full-size R50 inferences on 2 threads; the rest of the suite keeps 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(reference, tmp_path_factory):
    """Focus-DETR-R50 from our config, loaded through our checkpointer (key aliases applied)
    with the fixture's synthesized weights under the published key names."""
    model = instantiate_model(LazyConfig.load(str(CONFIG)).model).eval()
    return load_synthesized(
        model,
        KEYS,
        reference["aliases"],
        reference["salt"],
        reference["constant_rows"],
        tmp_path_factory.mktemp("ckpt"),
    )


@pytest.fixture(scope="module")
def runs(model, reference):
    """Each image alone (batch of 1), as the reference ran."""
    out = []
    for ref in reference["images"]:
        image = ref["image"]
        inputs = [{"image": image, "height": image.shape[1], "width": image.shape[2]}]
        with torch.no_grad():
            images = model.preprocess_image(inputs)
            outputs = model.compute_outputs(images)
            detections = model.postprocess(
                outputs["pred_logits"], outputs["pred_boxes"], images.image_sizes, inputs
            )[0]["instances"]
        out.append((outputs, detections))
    return out


def test_published_keys_load_without_missing_or_unexpected(model):
    keys = read_key_shapes(KEYS)
    converted = apply_key_aliases(
        {k: torch.zeros(s) for k, s in keys.items()}, model.state_dict().keys()
    )
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    assert sum(p.numel() for p in model.parameters()) == 49_339_920  # published count


@pytest.mark.parametrize("i", [0, 1])
def test_encoder_stage(runs, reference, i):
    outputs, _ = runs[i]
    ref = reference["images"][i]
    selection = outputs["encoder_output"].selection
    assert torch.allclose(selection.scores[0], ref["fts_logits"], atol=1e-3, rtol=0)
    assert selection.counts()[0].tolist() == ref["keep_counts"]
    for layer in range(6):
        kept = selection.kept_index[layer][0][selection.kept_valid[layer][0]]
        assert torch.equal(kept.sort().values, ref["kept_tokens"][layer].long()), layer
        objects = selection.object_index[layer][0][selection.object_valid[layer][0]]
        assert torch.equal(objects.sort().values, ref["object_tokens"][layer].long()), layer
    rows = ref["memory_rows"].long()
    assert torch.allclose(outputs["memory"][0, rows], ref["memory"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("i", [0, 1])
def test_proposals_and_decoder_rows_keyed_by_token(runs, reference, i):
    outputs, _ = runs[i]
    ref = reference["images"][i]
    ours = outputs["enc_topk_indices"][0]
    theirs = ref["enc_topk_indices"].long()
    assert torch.equal(ours.sort().values, theirs.sort().values)  # the same 900 tokens
    position = torch.empty(int(ours.max()) + 1, dtype=torch.long)
    position[ours] = torch.arange(len(ours))
    perm = position[theirs]  # our row of each reference row
    rows = ref["proposal_rows"].long()

    def close(a, b, atol):
        assert torch.allclose(a, b, atol=atol, rtol=0), (a - b).abs().max()

    close(outputs["enc_topk_scores"][0, perm], ref["enc_topk_scores"], 1e-4)
    close(outputs["enc_outputs"]["pred_boxes"][0, perm], ref["enc_boxes"], 1e-5)
    close(outputs["enc_outputs"]["pred_logits"][0, perm[rows]], ref["enc_logits_rows"], 1e-4)
    close(outputs["init_reference"][0, perm], ref["init_reference"], 1e-5)
    close(outputs["references"][:, 0, perm], ref["inter_references"], 1e-4)
    close(outputs["pred_logits"][0, perm], ref["pred_logits"], 1e-3)
    close(outputs["pred_boxes"][0, perm], ref["pred_boxes"], 1e-4)
    for layer, aux in enumerate(outputs["aux_outputs"]):
        close(aux["pred_boxes"][0, perm], ref["aux_boxes"][layer], 1e-4)
        close(aux["pred_logits"][0, perm[rows]], ref["aux_logits_rows"][layer], 1e-3)


@pytest.mark.parametrize("i", [0, 1])
def test_detections_match_as_sets(runs, reference, i):
    _, detections = runs[i]
    ref = reference["images"][i]
    top = detections.scores.argsort(descending=True)[:100]
    boxes, scores, classes = (
        detections.pred_boxes.tensor[top],
        detections.scores[top],
        detections.pred_classes[top],
    )
    ref_classes = ref["det_classes"].long()
    for box, score, cls in zip(boxes, scores, classes):
        same = (
            (ref_classes == cls)
            & ((ref["det_scores"] - score).abs() <= 5e-4)
            & ((ref["det_boxes"] - box).abs().max(-1).values <= 0.1)
        )
        assert same.any(), (box, score, cls)


def test_mixed_size_batch_padding_changes_no_valid_output(model, reference):
    """Both images in one padded batch: each keeps its own token counts, and noise written into
    the padded region of every neck level changes none of the valid images' outputs. Half-size
    images (faster) have 810 tokens and fewer: too few for 900 queries (see the next test), so
    this test selects 300."""
    images = [r["image"][:, ::2, ::2].contiguous() for r in reference["images"]]  # smaller: faster
    inputs = [{"image": im, "height": im.shape[1], "width": im.shape[2]} for im in images]

    def run(noise_scale):
        def perturb(module, args, features):
            mask = model.padding_mask(batch)
            out = []
            for f in features:
                level_mask = F.interpolate(mask[None].float(), size=f.shape[-2:]).bool()[0]
                noise = (
                    torch.randn(f.shape, generator=torch.Generator().manual_seed(1)) * noise_scale
                )
                out.append(torch.where(level_mask[:, None], f + noise, f))
            return out

        handle = model.neck.register_forward_hook(perturb)
        model.transformer.num_queries = 300
        try:
            with torch.no_grad():
                return model.compute_outputs(batch)
        finally:
            handle.remove()
            model.transformer.num_queries = 900

    batch = model.preprocess_image(inputs)
    clean, noisy = run(0.0), run(5.0)
    counts = clean["encoder_output"].selection.counts()
    pad = clean["encoder_inputs"].padding_mask
    assert pad.any(1).all()  # both images are padded in some level
    for i, valid_tokens in enumerate((~pad).sum(1).tolist()):  # own counts, published arithmetic
        focus = int(valid_tokens * 0.5) + 1
        cascade = torch.tensor([1.0, 0.8, 0.6, 0.6, 0.4, 0.2], dtype=torch.float32)
        assert counts[i].tolist() == [int(c) for c in (cascade * focus).tolist()]
    assert counts[0].tolist() != counts[1].tolist()
    valid = ~pad
    assert torch.allclose(noisy["memory"][valid], clean["memory"][valid], atol=1e-5)
    for key in ("pred_logits", "pred_boxes", "enc_topk_scores"):
        assert torch.allclose(noisy[key], clean[key], atol=1e-5), key
    assert torch.equal(noisy["enc_topk_indices"], clean["enc_topk_indices"])
    assert clean["enc_topk_indices"].shape == (2, 300)
    assert not pad.gather(1, clean["enc_topk_indices"]).any()  # padding is never proposed


def test_images_too_small_for_the_published_query_budget_are_named(model, reference):
    """The half-size fixture image has ~800 tokens, fewer than the published 900 queries: the
    error names it instead of proposing padded tokens (batched) or fewer queries (alone)."""
    image = reference["images"][0]["image"][:, ::2, ::2].contiguous()
    inputs = [{"image": image, "height": image.shape[1], "width": image.shape[2]}]
    with (
        torch.no_grad(),
        pytest.raises(
            ValueError,
            match=r"image 0 of the batch is too small "
            r"for the query budget: 8\d\d tokens .* num_queries=900",
        ),
    ):
        model.compute_outputs(model.preprocess_image(inputs))
