"""STATM-SAVi++ on MOVi-E: 128x128, K=23 (24 slots), batch 64, random resized crop, log depth, one slot-attention
iteration, eval slice 24 (the original's statm_savi_conditional.py at HEAD 297a86cf).

    python -m trainer.main --config configs/movi_e_statm_savi_pp.py --config.data.data_dir=$DATA/movi_e_128 \
        --workdir $RUNS/statm_pp_movi_e_bs64
    python -m data.tools.preview --config configs/movi_e_statm_savi_pp.py \
        --config.data.data_dir=$DATA/movi_e_128 --split validation --num_examples 4 --out /tmp/preview.npz
"""

import ml_collections

from configs.common import add_training, data_config, model_config, run_config


def get_config() -> ml_collections.ConfigDict:
    # eval_batch_size 16: the original's 2 videos per GPU on one 8-GPU node; on more devices it is rounded up to
    # one video per device (configs/validate.py: eval_batch_size).
    config = run_config(max_instances=23, batch_size=64, eval_batch_size=16, eval_slice_size=24)
    config.data = data_config("", resolution=128, depth_transform="log_plus", train_crop="random_resized_crop")
    config.model = model_config("pp", "statm")
    config.model.remat = True  # batch 64 at 128x128: the broadcast decoder's activations dominate memory
    return add_training(config)
