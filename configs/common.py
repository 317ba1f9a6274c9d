"""The data block every config shares (SAVi's MOVi defaults); configs override what differs."""

import ml_collections


def data_config(data_dir: str, resolution: int, depth_transform: str = "none",
                train_crop: str = "none") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "data_dir": data_dir,  # a converted directory (python -m data.convert_tfds_to_arrayrecord / data.synthetic)
        "train_split": "train",
        "eval_split": "validation",
        "resolution": resolution,  # resize_small size; the random-resized-crop output size when train_crop is set
        "depth_transform": depth_transform,  # "none" | "log_plus"
        "train_crop": train_crop,  # "none" | "random_resized_crop" (SAVi++: min_object_covered=0.75)
        "train_frames": 6,  # strided random window
        "eval_frames": 24,  # all frames
        "fused_train_ops": True,  # train chain in one compiled pass (data/fused.py); False: op-by-op NumPy
        "worker_count": 0,  # Grain worker processes per JAX process (0: in-process threads only)
        "read_threads": 8,
        "prefetch_buffer_size": 32,
    })
