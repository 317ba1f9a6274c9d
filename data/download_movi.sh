#!/bin/bash
# Download one MOVi variant in the layout the converter expects: TFDS_DIR/movi_X/RESOLUTION/1.0.0/ (TFDS's
# NAME/CONFIG/VERSION), then print the conversion commands.
#
#   bash data/download_movi.sh movi_e 128x128 /shared/tfds     (about 60 GB per variant at 128x128)
#
# gsutil names a copied directory by whether the destination exists (gsutil help cp, "How Names Are
# Constructed"): into an existing directory, `cp -r .../1.0.0 DEST` makes DEST/1.0.0; into a missing one, DEST
# itself holds the files. So the parent is created first, and the result is checked.
set -euo pipefail
VARIANT=${1:?usage: bash data/download_movi.sh movi_a|movi_b|movi_c|movi_d|movi_e [128x128|256x256] [TFDS_DIR]}
RESOLUTION=${2:-128x128}
TFDS_DIR=${3:-$HOME/tfds}
VERSION=1.0.0
case $VARIANT in movi_[a-e]) ;; *) echo "error: unknown variant $VARIANT (movi_a ... movi_e)" >&2; exit 1 ;; esac
case $RESOLUTION in 128x128 | 256x256) ;; *) echo "error: unknown resolution $RESOLUTION (128x128, 256x256)" >&2; exit 1 ;; esac

parent="$TFDS_DIR/$VARIANT/$RESOLUTION"
mkdir -p "$parent"
gsutil -m cp -r "gs://kubric-public/tfds/$VARIANT/$RESOLUTION/$VERSION" "$parent/"
if [ ! -f "$parent/$VERSION/dataset_info.json" ]; then
  echo "error: $parent/$VERSION/dataset_info.json is missing after the copy; rerun this script (gsutil resumes)" >&2
  exit 1
fi
size=${RESOLUTION%%x*}
echo "downloaded $parent/$VERSION. Convert it (one machine, or a SLURM array on shared storage):"
echo "  python -m data.convert_tfds_to_arrayrecord --tfds_dir $TFDS_DIR --dataset $VARIANT/$RESOLUTION:$VERSION \\"
echo "      --out_dir DATA/${VARIANT}_$size --num_workers 8"
echo "  TFDS_DIR=$TFDS_DIR DATASET=$VARIANT/$RESOLUTION:$VERSION OUT_DIR=DATA/${VARIANT}_$size \\"
echo "      sbatch --array=0-31 launch/slurm/convert.sbatch"
