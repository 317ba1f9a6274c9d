"""Demo: STATM-SAVi on synthetic MOVi-A-like data, shrunk to train in minutes on a 2-core CPU.

    make demo
    # which runs:
    python -m data.synthetic --out_dir demo_data --num_train 256 --num_validation 32 --resolution 64 \
        --min_objects 2 --max_objects 5 --size_scale 1.5 --speed 1.3 --friction 0.5 --shadow_light 0.6 \
        --floor_jitter 0.4 --floor_tint 0.4 --skip_existing
    python -m trainer.main --config configs/demo.py --config.data.data_dir=$PWD/demo_data --workdir workdirs/demo

Same code paths as the real configs: the small architecture at 32x32 with narrower layers, K=5 (6 slots),
evaluation on all 24 frames, the original's loss and optimiser with a short warmup. These choices get it
learning within the CPU budget (BENCHMARKS.md, "Demo"):
- the data: 2-5 objects at 1.5x MOVi-A's sizes that keep sliding, and a floor whose gray level and tint vary
  per video. Any slot whose vector carries the floor's colour paints the floor as well as the background slot
  does, and then nothing in the loss makes the background slot own it. On MOVi-A's one flat floor object slots
  took 81-95 % of it and lost mIoU to static boxes; with a per-video gray level the background slot owned the
  floor on three seeds of five, with a per-video tint as well on four of five (BENCHMARKS.md, "Demo": the
  seeds, and the floors that learned too slowly);
- the decoder reconstructs the RGB frames: flow targets carry no appearance, so a slot must track its object
  across frames before the flow loss rewards binding, which takes far longer than minutes;
- readout_bias_init="target_mean": the output starts at the mean frame instead of 0 (with zero biases the
  first ~80 steps only fit that offset, and the slots came out of them identical for good);
- many small steps (batch 4, 3-frame clips) rather than few large ones, for the same compute: at this
  budget the number of updates decides (fewer, longer clips scored lower in runs of this config);
- decoder.conv_transpose="phases": the same transposed convolutions computed as ordinary ones, which halves
  the step time on XLA's CPU backend and so buys twice the steps;
- two slot-attention iterations per frame, which tighten the masks around the objects.
"""

import ml_collections

from configs.common import add_training, data_config, model_config, run_config


def get_config() -> ml_collections.ConfigDict:
    # eval_slice_size 0: one buffer over all 24 evaluation frames
    config = run_config(max_instances=5, batch_size=8, eval_batch_size=8, eval_slice_size=0)
    config.data = data_config("demo_data", resolution=32)  # resize_small(32) of the 64x64 demo videos
    m = model_config("small", "statm")
    m.slot_size = 64
    m.init_hidden_size = 128
    m.encoder.update(cnn_features=(32, 32, 32), cnn_kernel_size=3, cnn_strides=(1, 1, 1), pos_mlp_hidden=64)
    # Two slot-attention iterations per frame (as the original's STATM-SAVi++; the small setting has one):
    # a higher FG-ARI over three seeds than one iteration, for a little more step time (BENCHMARKS.md, "Demo",
    # keeps this recipe's result and its seeds' range).
    m.recurrence.update(num_iterations=2, corrector_qkv=64, predictor_qkv=64, predictor_mlp=128)
    # The per-slot broadcast decoder dominates the cost: 16 channels, 8x8 -> 16x16 -> 32x32. 4x4 kernels at
    # stride 2 overlap evenly (3x3 ones left a checkerboard in the masks and scored lower).
    m.decoder.update(features=(16, 16), kernel_size=4, strides=(2, 2), transpose=(True, True), conv_transpose="phases")
    m.decoder.targets = {"video": 3}
    config.model = m
    config.data.train_frames = 3
    add_training(config, num_train_steps=8000)
    config.batch_size = 4
    config.readout_bias_init = "target_mean"
    config.learning_rate = 1e-3
    config.warmup_steps = 100
    config.log_loss_every_steps = 50
    config.eval_every_steps = 8000
    config.checkpoint_every_steps = 2000
    config.eval_at_start = True
    return config
