#!/usr/bin/env bash
# Score (and crop) a catalogue as a Slurm job array: task K of the array runs shard K.
# `loupe batch --shard-from-env` reads SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and
# SLURM_ARRAY_TASK_COUNT, so the shard count follows --array. Resubmitting the same script after
# a failure (or `scontrol requeue`) skips every photo already written.
#
#   sbatch deploy/slurm-array.sh /shared/photos /shared/loupe-results
#
#SBATCH --job-name=loupe-catalogue
#SBATCH --array=0-31%8
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=04:00:00
#SBATCH --requeue
set -euo pipefail
photos="${1:?usage: sbatch slurm-array.sh PHOTOS_DIR OUT_DIR}"
out="${2:?usage: sbatch slurm-array.sh PHOTOS_DIR OUT_DIR}"
export RAYON_NUM_THREADS="${SLURM_CPUS_PER_TASK:-2}"
exec loupe batch "$photos" --out "$out" --task both --aspect 1:1 --aspect 16:9 --shard-from-env --quiet
