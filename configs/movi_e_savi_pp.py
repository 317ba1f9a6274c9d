"""SAVi++ baseline on MOVi-E: the ++ architecture with SAVi's transformer predictor, K=23, batch 64
(savi++_conditional.py).

    python -m trainer.main --config configs/movi_e_savi_pp.py --config.data.data_dir=$DATA/movi_e_128 \
        --workdir $RUNS/savi_pp_movi_e_bs64
    python -m data.tools.preview --config configs/movi_e_savi_pp.py --config.data.data_dir=$DATA/movi_e_128 \
        --split validation --num_examples 4 --out /tmp/preview.npz
"""

import ml_collections

from configs.common import add_training, data_config, model_config, run_config


def get_config() -> ml_collections.ConfigDict:
    config = run_config(max_instances=23, batch_size=64, eval_batch_size=64, eval_slice_size=6)
    config.data = data_config("", resolution=128, depth_transform="log_plus", train_crop="random_resized_crop")
    config.model = model_config("pp", "transformer")
    config.model.remat = True
    return add_training(config)
