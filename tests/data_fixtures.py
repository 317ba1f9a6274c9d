"""Helpers shared by the input-pipeline tests: one preprocessing spec and its training dataset."""

from data.pipeline import datasets

SPEC = datasets.PreprocessSpec(resolution=24, max_instances=10, train_crop="random_resized_crop",
                               depth_transform="log_plus", train_frames=6, eval_frames=12)


def train_ds(data_dir, spec=SPEC, seed=1):
    return datasets.train_dataset(datasets.open_split(data_dir, "train", spec.max_instances), spec, seed)
