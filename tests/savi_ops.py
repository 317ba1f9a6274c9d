"""SAVi's temporal_random_strided_window on decoded features: the reference that the pipeline's
DecodeStridedWindow (the same window taken while decoding) is tested against."""

import dataclasses

import grain
import numpy as np

from data.pipeline import transforms as T


@dataclasses.dataclass(frozen=True)
class TemporalRandomStridedWindow(grain.transforms.RandomMap):
    """One of the ceil(T/length) non-overlapping windows [0:L], [L:2L], …, uniformly."""

    length: int

    def random_map(self, f: T.Features, rng: np.random.Generator) -> T.Features:
        start = T.strided_window_start(f["video"].shape[0], self.length, rng)
        out = {k: (T._crop_or_pad_time(v, start, self.length) if k in T.TEMPORAL_KEYS else v) for k, v in f.items()}
        out.setdefault("shape", np.array(f["video"].shape, np.int32))
        return out
