#!/usr/bin/env python
"""Convert a published release file (detrex / Focus-DETR model zoo zip, or its .pth) into a
checkpoint of one of our configs, checked to fit that config's model exactly.

    unzip -l focus_detr_r50_4scale_36ep.zip        # the release zips hold one .pth
    python tools/convert_release.py --config-file projects/focus_detr/configs/focus_detr_r50_4scale_36ep.py \\
        --input focus_detr_r50_4scale_36ep.zip --output weights/focus_detr_r50_4scale_36ep.pth
    python tools/train_net.py --config-file projects/focus_detr/configs/focus_detr_r50_4scale_36ep.py \\
        --eval-only train.init_checkpoint=weights/focus_detr_r50_4scale_36ep.pth train.device=cuda

The release's keys are detrex's; ours load them directly too (registered key aliases, e.g. the
shared encoder class head's three names), so a bare release .pth also works as
`train.init_checkpoint`. Converting checks every key and shape once, up front, names what does not
fit (another model, another num_classes), refuses non-finite weights, and writes
`{"model": state_dict}` under our key names. Nothing is downloaded.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import check_overrides, filter_known_warnings, tool_parser  # noqa: E402

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings


def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--config-file", required=True, help="our config of the released model")
    p.add_argument("--input", required=True, help="the release zip, or the .pth inside it")
    p.add_argument("--member", help="the .pth inside the zip, when it holds several")
    p.add_argument("--output", required=True, help="checkpoint to write (.pth)")
    p.add_argument("opts", nargs="*", default=[], help="config overrides key=value")
    args = p.parse_args(argv)
    args.opts = check_overrides(p, args.opts)
    if Path(args.output).resolve() == Path(args.input).resolve():
        p.error("--output must differ from --input")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answered before torch and detectron2 load


def main(argv=None):
    """Convert; returns `convert_release`'s summary."""
    from focus_detr.analysis import load_config
    from focus_detr.modeling import instantiate_model
    from focus_detr.modeling.release import convert_release

    args = parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    model = instantiate_model(cfg.model)
    summary = convert_release(args.input, model, args.output, args.member)
    print(
        f"{summary['source']}: {summary['release_keys']} keys "
        f"({summary['aliased']} shared-tensor aliases) fit {type(model).__name__} of "
        f"{args.config_file} ({summary['parameters'] / 1e6:.2f} M parameters); wrote "
        f"{summary['output']}\n"
        f"Evaluate: python tools/train_net.py --config-file {args.config_file} --eval-only "
        f"train.init_checkpoint={summary['output']}\n"
        f"Demo:     python tools/demo.py --config-file {args.config_file} --input IMAGES "
        f"--output out/demo --opts train.init_checkpoint={summary['output']}"
    )
    return summary


if __name__ == "__main__":
    main()
