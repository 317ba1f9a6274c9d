"""SAVi-S baseline on MOVi-A: the small architecture with SAVi's transformer predictor, K=23 (24 slots), batch 64
(savi_conditional_small.py).

    python -m trainer.main --config configs/movi_a_savi_small.py --config.data.data_dir=$DATA/movi_a_128 \
        --workdir $RUNS/savi_small_movi_a_bs64
    python -m data.tools.preview --config configs/movi_a_savi_small.py --config.data.data_dir=$DATA/movi_a_128 \
        --split validation --num_examples 4 --out /tmp/preview.npz
"""

import ml_collections

from configs.common import add_training, data_config, model_config, run_config


def get_config() -> ml_collections.ConfigDict:
    config = run_config(max_instances=23, batch_size=64, eval_batch_size=64, eval_slice_size=6)
    config.data = data_config("", resolution=64)
    config.model = model_config("small", "transformer")
    return add_training(config)
