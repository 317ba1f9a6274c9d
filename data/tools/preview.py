"""Dump preprocessed eval examples (exactly what the model is fed) to .npz, plus PNG previews.

    python -m data.tools.preview --config configs/statm_savi.py:movi_a --config.data.data_dir=DIR \
        --split validation --num_examples 2 --out /tmp/preview.npz --png_dir /tmp/preview_png

Keys: `<video_name>/<key>` for video, segmentations, flow, depth, boxes, padding_mask (and shape).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from cli.config_flags import check_config_overrides
from configs.validate import expand_paths, validate
from data import batch, pictures
from data.pipeline import datasets
from data.records import codec

# The eval batch's keys (data/batch.py) without the padding flag, plus the source video's shape.
KEYS = (*(k for k in batch.EVAL.keys if k != "mask"), "shape")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
_SPLIT = flags.DEFINE_string("split", "validation", "Split to preview.")
_NUM = flags.DEFINE_integer("num_examples", 4, "Number of videos (from the start of the split).")
_OUT = flags.DEFINE_string("out", None, "Output .npz path.")
_PNG_DIR = flags.DEFINE_string("png_dir", None, "Optional directory for one PNG grid per video.")


def main(argv):
    del argv
    if not _OUT.value:
        raise app.UsageError("--out is required")
    config = expand_paths(_CONFIG.value)
    try:
        validate(config)
        spec = datasets.spec_from_config(config)
        source = datasets.open_split(config.data.data_dir, _SPLIT.value, spec.max_instances)
        examples = datasets.eval_examples(source, spec, _NUM.value)
    except (codec.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    arrays = {f"{ex['video_name']}/{k}": ex[k] for ex in examples for k in KEYS}
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    np.savez(_OUT.value, **arrays)
    print(f"wrote {len(examples)} example(s) to {_OUT.value}")
    if _PNG_DIR.value:
        os.makedirs(_PNG_DIR.value, exist_ok=True)
        for ex in examples:
            path = os.path.join(_PNG_DIR.value, f"{ex['video_name']}.png")
            Image.fromarray(pictures.grid(pictures.example_rows(ex, batch.EVAL))).save(path)
        print(f"wrote {len(examples)} PNG preview(s) to {_PNG_DIR.value}")
    return 0


if __name__ == "__main__":
    check_config_overrides(sys.argv)
    flags.mark_flags_as_required(["config"])
    app.run(main)
