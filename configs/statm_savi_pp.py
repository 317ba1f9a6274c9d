"""STATM-SAVi++ (ResNet-34 + Transformer encoder, early fusion, flow and depth targets, STATM's time-space block) on
one MOVi variant.

    python -m trainer.main --config configs/statm_savi_pp.py:movi_e --config.data.data_dir=$DATA/movi_e_128 \
        --workdir $RUNS/statm_savi_pp_movi_e
    python -m data.tools.preview --config configs/statm_savi_pp.py:movi_e \
        --config.data.data_dir=$DATA/movi_e_128 --split validation --num_examples 4 --out /tmp/preview.npz

The original (intell-sci-comput/STATM at 297a86cf) ships the ++ model for two variants, and each variant here
follows the one whose objects it shares (configs/variants.py):
- movi_d, movi_e: statm_savi_conditional.py (MOVi-E): 128x128, K=23, batch 64, one slot-attention iteration,
  evaluation slices of 24 frames, 100k steps;
- movi_a, movi_b, movi_c: statm_savi++_conditional.py (MOVi-A): 128x128, K=10, two slot-attention iterations,
  evaluation slices of 6 frames, 100k steps; at batch 64 where the original has 32, so that every config runs on
  1 to 8 nodes of 8 GPUs (32 does not split over 64 devices; --config.batch_size=32 is the original's).
Both: random resized crop (min_object_covered 0.75), log(1 + depth), flow and depth targets.
"""

import ml_collections

from configs import variants
from configs.common import add_training, data_config, model_config, run_config


def get_config(variant: str = "movi_e") -> ml_collections.ConfigDict:
    few = variants.few_objects(variant)
    # eval_batch_size: the original's 8 (MOVi-A) or 2 videos per GPU on one 8-GPU node (16, MOVi-E); rounded up
    # to one video per device on more devices (configs/validate.py: eval_batch_size).
    config = run_config(max_instances=variants.MOST_OBJECTS[variant], batch_size=64,
                        eval_batch_size=8 if few else 16, eval_slice_size=6 if few else 24)
    config.data = data_config("", resolution=128, depth_transform="log_plus", train_crop="random_resized_crop")
    config.model = model_config("pp", "statm")
    config.model.recurrence.num_iterations = 2 if few else 1
    config.model.remat = True  # batch 64 at 128x128: the broadcast decoder's activations dominate memory
    return add_training(config)
