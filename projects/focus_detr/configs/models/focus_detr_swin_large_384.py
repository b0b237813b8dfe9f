"""Focus-DETR with Swin-L (detrex's `focus_detr_swin_large_384` model): the R50 model with the
published Swin backbone of these settings (`swin_backbones.SWIN_LARGE_384`)."""

from .focus_detr_r50 import model
from .swin_backbones import SWIN_LARGE_384, use_swin

use_swin(model, SWIN_LARGE_384)
