#!/bin/bash
# regkit batch as a Slurm array job: 4 tasks, one shard of pairs.csv each.
#
#   cd /project/study            # holds pairs.csv (paths in it are relative to it)
#   mkdir -p logs
#   jobid=$(sbatch --parsable /path/to/slurm.sh)
#   sbatch --dependency=afterany:$jobid --wrap 'regkit batch merge results --manifest pairs.csv'
#
# Task k runs the rows r with r mod 4 = k: regkit reads k from SLURM_ARRAY_TASK_ID (counted
# from SLURM_ARRAY_TASK_MIN, so --array=1-4 works too) and checks that --shards equals
# SLURM_ARRAY_TASK_COUNT. Resubmitting the same script (after a time-out, a node failure or
# a fixed input) skips every row whose result.json is up to date. A task exits 1 when one of
# its rows failed: see results/failures-<k>-of-4.jsonl.
#SBATCH --job-name=regkit-batch
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --output=logs/regkit-batch-%A_%a.log
set -euo pipefail

regkit batch --manifest pairs.csv --out-dir results --shards 4
