"""python -m bench [--movi_sample DIR] [--out results.json] [--tf_python .venv-tf/bin/python]: run the
benchmarks, print Markdown rows. With --tf_python (make bench-tf builds that environment), the data bench also
times the original's TensorFlow input path side by side with ours."""

import argparse
import json
import os

from bench import conv_transpose, data_pipeline, model_scan

# As the tests: ../shared next to the checkout, or STATM_SHARED_DIR.
SHARED = os.environ.get("STATM_SHARED_DIR",
                        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared"))
DEFAULT_SAMPLE = os.path.join(SHARED, "movi_sample")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--movi_sample", default=os.path.normpath(DEFAULT_SAMPLE))
    p.add_argument("--out", default=None, help="also write the raw results as JSON")
    p.add_argument("--only", choices=("data", "model", "conv_transpose"), default=None)
    p.add_argument("--model_batch", type=int, default=1)
    p.add_argument("--tf_python", default=None, help="python of an environment with TensorFlow (make bench-tf)")
    a = p.parse_args()
    if a.only in (None, "data") and not os.path.isdir(a.movi_sample):
        p.error(f"MOVi sample not found at {a.movi_sample}: pass --movi_sample DIR or set STATM_SHARED_DIR")
    results = {}
    if a.only in (None, "data"):
        results["data_pipeline"] = data_pipeline.run(a.movi_sample, tf_python=a.tf_python)
    if a.only in (None, "model"):
        results["model_scan"] = model_scan.run(batch=a.model_batch)
    if a.only in (None, "conv_transpose"):
        results["conv_transpose"] = conv_transpose.run()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
