#!/usr/bin/env bash
# The timed NLVR chain, as chain2 (colabs/results/nlvr_shapes/chain_precomputed_run.sh), with
# the parser's readings decoded with duplicate suppression (threshold 0.2, min_separation
# 6/64). The parser stage is chain2's run (same config and training code): its 459 s count.
set -uo pipefail
W=/tmp/chain3
cd $W/src   # a snapshot of the code, so that edits elsewhere do not reach the run
export TFDS_DATA_DIR=/tmp/tfds
BUDGET_S=1800
PARSER_S=459
RATE=${RATE:-5.0}
NLVR_OVERHEAD_S=${NLVR_OVERHEAD_S:-210}
start=$(( $(date +%s) - PARSER_S ))
stage() { local name=$1; shift; local t0=$(date +%s)
  python -m multimodal.main "$@" --workdir=$W/$name > $W/$name.log 2>&1 || { echo "$name failed"; exit 1; }
  echo "$name $(( $(date +%s) - t0 )) s" | tee -a $W/wall_times.txt; }
rm -f $W/wall_times.txt
echo "sp $PARSER_S s (chain2's run)" | tee -a $W/wall_times.txt
stage vqa --config=configs/shapes_vqa.py:tokenizer=shapes_vl,image=object_readings,image_init=$W/sp,precompute=true,total_steps=${VQA_STEPS:-1500}
left=$(( BUDGET_S - ($(date +%s) - start) - NLVR_OVERHEAD_S ))
steps=$(python -c "print(max(500, int($left * $RATE) // 100 * 100))")
echo "nlvr steps $steps (budget left $left s after overhead)" | tee -a $W/wall_times.txt
stage nlvr --config=configs/shapes_nlvr.py:image=object_readings,image_init=$W/sp,precompute=true,init=$W/vqa,total_steps=$steps
echo "total $(( $(date +%s) - start )) s" | tee -a $W/wall_times.txt
