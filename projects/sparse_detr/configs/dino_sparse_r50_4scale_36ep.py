"""DINO-R50 (4 scales) + Sparse DETR encoder, keep ratio rho = 0.3, 36 epochs on COCO: the paper's
"DINO + Sparse DETR" baseline (Table 1: 48.2 AP, 152 GFLOPs; Table 6 sweeps rho 0.1 .. 0.5).

`projects/dino/configs/dino_r50_4scale_36ep.py` (data, optimizer, 36-epoch schedule with the decay
at epoch 20, position embedding of the 24/36-epoch DINO) with a swappable encoder. One override
swaps it, every weight name outside `transformer.encoder` stays DINO's:

    model.transformer.encoder.name=dense | sparse | focus
    model.transformer.encoder.keep_ratio=0.1 .. 0.5
"""

from focus_detr.evaluation import with_token_selection
from focus_detr.modeling.encoders import swappable_encoder

from ...dino.configs.dino_r50_4scale_36ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.encoder = swappable_encoder(
    model.transformer.encoder, name="sparse", keep_ratio=0.3
)

train.output_dir = "./output/dino_sparse_r50_4scale_36ep"
# COCO AP and the kept tokens' precision/recall against the foreground labels, in one pass (a
# dense encoder keeps every token: its selection metrics are skipped with a warning)
dataloader.evaluator = with_token_selection(dataloader.evaluator)
model.return_token_selection = True
