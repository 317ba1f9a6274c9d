"""The SAVi++ baseline (the ++ architecture with SAVi's transformer predictor) on one MOVi variant.

    python -m trainer.main --config configs/savi_pp.py:movi_e --config.data.data_dir=$DATA/movi_e_128 \
        --workdir $RUNS/savi_pp_movi_e

Reproduces SAVi's savi++_conditional.py (google-research/slot-attention-video): 128x128, K=23 for every variant,
batch 64, random resized crop, log(1 + depth), flow and depth targets, evaluation slices of 6 frames, and its
500k steps: this config follows SAVi's own baseline. The STATM paper compares against baselines it re-trained for
100k steps at batch 32; for that comparison pass --config.num_train_steps=100000 --config.batch_size=32.
"""

import ml_collections

from configs import variants
from configs.common import add_training, data_config, model_config, run_config


def get_config(variant: str = "movi_e") -> ml_collections.ConfigDict:
    variants.check(variant)
    config = run_config(max_instances=23, batch_size=64, eval_batch_size=64, eval_slice_size=6)
    config.data = data_config("", resolution=128, depth_transform="log_plus", train_crop="random_resized_crop")
    config.model = model_config("pp", "transformer")
    config.model.remat = True
    return add_training(config, num_train_steps=500_000)
