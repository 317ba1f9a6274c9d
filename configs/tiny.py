"""The demo config shrunk to a fraction of a second per step: for tests, the chaos bench and smoke checks.

python -m trainer.main --config configs/tiny.py --config.data.data_dir=DIR --workdir WORKDIR
(DIR: e.g. `python -m data.synthetic --out_dir DIR --num_train 24 --num_validation 6 --resolution 32
--num_frames 12`)
"""

from configs import demo


def get_config():
    config = demo.get_config()
    config.data.resolution = 16
    config.data.eval_frames = 12
    config.batch_size = 4
    config.eval_batch_size = 4
    m = config.model
    m.slot_size = 16
    m.init_hidden_size = 16
    m.encoder.update(cnn_features=(8, 8), cnn_kernel_size=3, cnn_strides=(1, 1), pos_mlp_hidden=8)
    m.recurrence.update(corrector_qkv=16, predictor_qkv=16, predictor_mlp=16)
    m.decoder.update(features=(8,), kernel_size=3, strides=(2,), transpose=(True,))  # 8x8 -> 16x16
    config.num_train_steps = 4
    config.warmup_steps = 10  # the schedule is then independent of num_train_steps over these steps
    config.log_loss_every_steps = 1
    config.eval_every_steps = 100
    config.checkpoint_every_steps = 2
    config.eval_at_start = False
    # Cache every compiled program, the quick ones too: tests restart these runs many times.
    config.compilation_cache_min_seconds = 0.0
    return config
