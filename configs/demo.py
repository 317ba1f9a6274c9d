"""Demo: synthetic MOVi-A-like data, sized for a 2-core CPU.

    make demo
    # which runs:
    python -m data.synthetic --out_dir demo_data --num_train 256 --num_validation 32 --resolution 64 --skip_existing
    python -m data.smoke --config configs/demo.py --config.data.data_dir=$PWD/demo_data \
        --workdir workdirs/demo
"""

import ml_collections

from configs.common import data_config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.max_instances = 10
    config.num_slots = config.get_ref("max_instances") + 1
    config.batch_size = 8
    config.eval_batch_size = 8
    config.data = data_config("demo_data", resolution=64)
    return config
