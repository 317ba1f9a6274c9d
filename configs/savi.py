"""The SAVi-S baseline (the small architecture with SAVi's transformer predictor) on one MOVi variant.

    python -m trainer.main --config configs/savi.py:movi_a --config.data.data_dir=$DATA/movi_a_128 \
        --workdir $RUNS/savi_movi_a

Reproduces SAVi's savi_conditional_small.py (google-research/slot-attention-video): 64x64, K=23 (24 slots) for
every variant as SAVi's configs keep it, batch 64, 100k steps, evaluation slices of 6 frames. Only the dataset
changes between variants.
"""

import ml_collections

from configs import variants
from configs.common import add_training, data_config, model_config, run_config


def get_config(variant: str = "movi_a") -> ml_collections.ConfigDict:
    variants.check(variant)
    config = run_config(max_instances=23, batch_size=64, eval_batch_size=64, eval_slice_size=6)
    config.data = data_config("", resolution=64)
    config.model = model_config("small", "transformer")
    return add_training(config)
