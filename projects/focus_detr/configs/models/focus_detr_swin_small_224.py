"""Focus-DETR with Swin-S (detrex's `focus_detr_swin_small_224` model): the R50 model with the
published Swin backbone of these settings (`swin_backbones.SWIN_SMALL_224`)."""

from .focus_detr_r50 import model
from .swin_backbones import SWIN_SMALL_224, use_swin

use_swin(model, SWIN_SMALL_224)
