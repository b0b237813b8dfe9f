"""Copy the tensors that tests/test_focus_fixture_equivalence.py compares out of the published
Focus-DETR-R50 reference outputs (../shared/fixtures/focus_detr_r50_detrex.pt, 19 MB) into
tests/fixtures/focus_detr_r50_reference.pt (~2.5 MB).

Kept: the input images, every FTS logit, keep counts, kept and object token sets per encoder layer,
a fixed random subset of encoder-output rows, the 900 proposals (token indices and scores, full
rows for a subset), final and auxiliary decoder boxes and references, final decoder logits, a
subset of auxiliary logits rows, and the top-120 detections.

    python projects/focus_detr/tools/make_test_fixture.py [SRC] [DST]
"""

import sys
from pathlib import Path

import torch

MEMORY_ROWS = 256  # encoder-output rows kept per image
PROPOSAL_ROWS = 128  # proposals whose full class-logit rows are kept (encoder and aux decoder)
DETECTIONS = 120


def main(src: str, dst: str):
    ref = torch.load(src, weights_only=True)
    meta, out, mid = ref["meta"], ref["outputs"], ref["intermediates"]
    g = torch.Generator().manual_seed(0)
    images = []
    for i, image in enumerate(ref["images"]):
        s = mid["memory"][i].shape[1]
        memory_rows = torch.randperm(s, generator=g)[:MEMORY_ROWS].sort().values
        proposal_rows = torch.randperm(900, generator=g)[:PROPOSAL_ROWS].sort().values
        topk = out["enc_topk_indices"][i][0]
        inst = ref["instances"][i]
        images.append(
            {
                "image": image,
                "fts_logits": mid["fts_logits"][i][0, :, 0].clone(),
                "keep_counts": list(mid["encoder_keep_counts"][i]),
                "kept_tokens": [
                    x[0].sort().values.to(torch.int32) for x in mid["encoder_foreground_inds"][i]
                ],
                "object_tokens": [
                    x[0].sort().values.to(torch.int32) for x in mid["encoder_oesm_token_inds"][i]
                ],
                "memory_rows": memory_rows.to(torch.int32),
                "memory": mid["memory"][i][0, memory_rows].clone(),
                "enc_topk_indices": topk.to(torch.int32),
                "enc_topk_scores": out["enc_topk_scores"][i][0].clone(),
                "enc_boxes": out["enc_outputs"][i]["pred_boxes"][0].clone(),
                "proposal_rows": proposal_rows.to(torch.int32),
                "enc_logits_rows": out["enc_outputs"][i]["pred_logits"][0, proposal_rows].clone(),
                "init_reference": out["init_reference"][i][0].clone(),
                "inter_references": out["inter_references"][i][:, 0].clone(),
                "pred_logits": out["pred_logits"][i][0].clone(),
                "pred_boxes": out["pred_boxes"][i][0].clone(),
                "aux_boxes": torch.stack([a["pred_boxes"][0] for a in out["aux_outputs"][i]]),
                "aux_logits_rows": torch.stack(
                    [a["pred_logits"][0, proposal_rows] for a in out["aux_outputs"][i]]
                ),
                "det_boxes": inst["boxes"][:DETECTIONS].clone(),
                "det_scores": inst["scores"][:DETECTIONS].clone(),
                "det_classes": inst["classes"][:DETECTIONS].to(torch.int32),
            }
        )
    small = {
        "source": "shared/fixtures/focus_detr_r50_detrex.pt (detrex "
        + meta["detrex_commit"][:7]
        + ")",
        "salt": meta["salt"],
        "constant_rows": list(meta["constant_rows"]),
        "aliases": dict(ref["aliases"]),
        "pixel_mean": meta["pixel_mean"],
        "pixel_std": meta["pixel_std"],
        "images": images,
    }
    torch.save(small, dst)
    print(f"wrote {dst}: {Path(dst).stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[3]
    main(
        sys.argv[1]
        if len(sys.argv) > 1
        else str(root.parent / "shared/fixtures/focus_detr_r50_detrex.pt"),
        sys.argv[2]
        if len(sys.argv) > 2
        else str(root / "tests/fixtures/focus_detr_r50_reference.pt"),
    )
