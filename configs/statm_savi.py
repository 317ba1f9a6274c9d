"""STATM-SAVi (the small model: CNN encoder, slot attention, STATM's time-space block) on one MOVi variant.

    python -m trainer.main --config configs/statm_savi.py:movi_a --config.data.data_dir=$DATA/movi_a_128 \
        --workdir $RUNS/statm_savi_movi_a
    python -m data.tools.preview --config configs/statm_savi.py:movi_a --config.data.data_dir=$DATA/movi_a_128 \
        --split validation --num_examples 4 --out /tmp/preview.npz

Reproduces the original's statm_savi_conditional_small.py (intell-sci-comput/STATM at 297a86cf, MOVi-A): 64x64,
batch 64, 100k steps, one slot-attention iteration, flow target, evaluation in slices of 6 frames. The original
ships this model for MOVi-A only; the other variants change the dataset and max_instances (configs/variants.py:
10 slots' worth of objects for A-C, 23 for D-E) and nothing else.
"""

import ml_collections

from configs import variants
from configs.common import add_training, data_config, model_config, run_config


def get_config(variant: str = "movi_a") -> ml_collections.ConfigDict:
    variants.check(variant)
    # eval_slice_size 6: the original's training-time evaluation; the paper evaluates with 24
    config = run_config(max_instances=variants.MOST_OBJECTS[variant], batch_size=64, eval_batch_size=16,
                        eval_slice_size=6)
    config.data = data_config("", resolution=64)  # SAVi-S chains: resize_small(64), flow_to_rgb
    config.model = model_config("small", "statm")
    return add_training(config)
