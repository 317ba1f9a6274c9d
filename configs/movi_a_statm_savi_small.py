"""STATM-SAVi (small) on MOVi-A: 64x64, K=10 (11 slots), batch 64 — the original small setting
(statm_savi_conditional_small.py).

    python -m trainer.main --config configs/movi_a_statm_savi_small.py --config.data.data_dir=$DATA/movi_a_128 \
        --workdir $RUNS/statm_small_movi_a_bs64
    python -m data.tools.preview --config configs/movi_a_statm_savi_small.py \
        --config.data.data_dir=$DATA/movi_a_128 --split validation --num_examples 4 --out /tmp/preview.npz
"""

import ml_collections

from configs.common import add_training, data_config, model_config, run_config


def get_config() -> ml_collections.ConfigDict:
    # eval_slice_size 6: the original's training-time evaluation; the paper evaluates with 24
    config = run_config(max_instances=10, batch_size=64, eval_batch_size=16, eval_slice_size=6)
    config.data = data_config("", resolution=64)  # SAVi-S chains: resize_small(64), flow_to_rgb
    config.model = model_config("small", "statm")
    return add_training(config)
