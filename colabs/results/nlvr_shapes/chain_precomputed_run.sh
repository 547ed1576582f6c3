#!/usr/bin/env bash
# The timed NLVR chain: parser -> VQA -> NLVR,
# the NLVR steps chosen to fill what is left of 30 minutes.
set -uo pipefail
cd /work/main
export TFDS_DATA_DIR=/tmp/tfds
W=/tmp/chain2
BUDGET_S=1800
RATE=${RATE:-5.0}        # NLVR steps/s on precomputed readings (measured: 5.0-5.4)
NLVR_OVERHEAD_S=${NLVR_OVERHEAD_S:-210}  # start-up, extraction (~100 s), evaluations
start=$(date +%s)
stage() { local name=$1; shift; local t0=$(date +%s)
  python -m multimodal.main "$@" --workdir=$W/$name > $W/$name.log 2>&1 || { echo "$name failed"; exit 1; }
  echo "$name $(( $(date +%s) - t0 )) s" | tee -a $W/wall_times.txt; }
rm -f $W/wall_times.txt
stage sp --config=configs/shapes_scene_parser.py
stage vqa --config=configs/shapes_vqa.py:tokenizer=shapes_vl,image=object_readings,image_init=$W/sp,precompute=true,total_steps=${VQA_STEPS:-1500}
left=$(( BUDGET_S - ($(date +%s) - start) - NLVR_OVERHEAD_S ))
steps=$(python -c "print(max(500, int($left * $RATE) // 100 * 100))")
echo "nlvr steps $steps (budget left $left s after overhead)" | tee -a $W/wall_times.txt
stage nlvr --config=configs/shapes_nlvr.py:image=object_readings,image_init=$W/sp,precompute=true,init=$W/vqa,total_steps=$steps
echo "total $(( $(date +%s) - start )) s" | tee -a $W/wall_times.txt
