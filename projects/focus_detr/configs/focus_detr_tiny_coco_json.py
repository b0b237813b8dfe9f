"""The tiny Focus-DETR (`focus_detr_tiny_synthetic.py`: small images, short schedule, CPU) on a
COCO-format json of one's own, given on the command line:

    python tools/train_net.py --config-file projects/focus_detr/configs/focus_detr_tiny_coco_json.py \\
        dataloader.train.dataset.json=data/train.json dataloader.train.dataset.images=data/images \\
        dataloader.test.dataset.json=data/val.json dataloader.test.dataset.images=data/images \\
        model.num_classes=3 train.max_iter=500

The datasets are registered on first use; `model.num_classes` must equal the json's number of
categories (else an error names both).
"""

from focus_detr.data.custom import use_coco_json

from .focus_detr_tiny_synthetic import dataloader, lr_multiplier, model, optimizer, train

dataloader = use_coco_json(dataloader)
train.output_dir = "./output/focus_detr_tiny_coco_json"
