#!/usr/bin/env bash
# GPU end-to-end check of gdro_verl: prompts recur, groups are unequal, weights move, resume works.
#
#   bash examples/verl/e2e_check.sh [prompt|rollout|both]      # TRAINER=v1 (default) or TRAINER=v0
#
# Needs a machine with a CUDA GPU AND NETWORK ACCESS: verl 0.9.1 with vLLM (pip install
# "verl[vllm]==0.9.1"), gdro installed in the same environment (pip install -e ".[verl]" from the
# gdro checkout), and it downloads openai/gsm8k and Qwen/Qwen2.5-0.5B-Instruct from the Hugging
# Face Hub. About 10-20 minutes on one 80 GB GPU. It cannot run in CI (no GPU, no network); the
# CPU tests (tests/verl/test_loops.py) run verl's own loops with the LLM and GPU workers stood in.
#
# The training set is the first 32 GSM8K train prompts, 16 per step: every prompt recurs every
# 2 steps, so the controller learns from its own feedback within the run.
# 1. train 6 steps (checkpoints at steps 3 and 6) with verl dumping every rollout
#    (trainer.rollout_data_dir) and gdro its plans next to them (gdro_plans.jsonl);
#    check_run.py asserts from those dumps that each step generated exactly 16 x 4 responses in
#    the planned group sizes, that group sizes were unequal (modes rollout, both) and weights not
#    1 (modes prompt, both), that prompts recurred, and from the console log that each step's
#    advantages were multiplied by its plan's weights (gdro/applied/weight_{min,max,mean});
# 2. inspect_checkpoint.py: global_step_6 holds a controller with exactly 6 completed plans
#    (gdro feeds each step back before verl checkpoints it);
# 3. rerun to step 8: verl resumes from global_step_6 (global_step_3 is not rewritten), the two
#    new steps pass the same checks, and global_step_8 holds exactly 8 completed plans.
set -euo pipefail

MODE="${1:-both}"
case "$MODE" in
  prompt|rollout|both) ;;
  *) echo "usage: $0 [prompt|rollout|both]; got '$MODE'" >&2; exit 2 ;;
esac
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TRAINER="${TRAINER:-v1}"
WORK="${WORK:-$(mktemp -d /tmp/gdro-e2e-XXXX)}"
DATA="$WORK/gsm8k-32"
CKPT="$WORK/checkpoints"
DUMPS="$WORK/rollouts"
BATCH=16
N=4  # actor_rollout_ref.rollout.n in gdro_grpo.yaml: the mean budget

echo "== 0. data: 32 train prompts, 64 test prompts -> $DATA"
python3 "$HERE/prepare_gsm8k.py" --out "$DATA" --train-limit 32 --test-limit 64

SMALL=(
  "data.train_batch_size=$BATCH"
  "actor_rollout_ref.rollout.n=$N"
  actor_rollout_ref.actor.ppo_mini_batch_size=8
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8
  trainer.save_freq=3
  trainer.test_freq=-1
  trainer.val_before_train=false
  "trainer.default_local_dir=$CKPT"
  "trainer.rollout_data_dir=$DUMPS"
)

echo "== 1. train 6 steps ($MODE, $TRAINER) -> $WORK"
DATA_DIR="$DATA" bash "$HERE/run_gdro_grpo.sh" "$MODE" "${SMALL[@]}" trainer.total_training_steps=6 \
  | tee "$WORK/run1.log"
grep -q "gdro/pass@1" "$WORK/run1.log" || { echo "FAIL: no gdro/ metrics in the log" >&2; exit 1; }
python3 "$HERE/check_run.py" "$DUMPS" --batch "$BATCH" --n "$N" --mode "$MODE" --log "$WORK/run1.log"

echo "== 2. controller state in global_step_6"
python3 "$HERE/inspect_checkpoint.py" "$CKPT/global_step_6" --expect-step 6

echo "== 3. resume to step 8"
BEFORE="$(stat -c %Y "$CKPT/global_step_3/data.pt")"
DATA_DIR="$DATA" bash "$HERE/run_gdro_grpo.sh" "$MODE" "${SMALL[@]}" trainer.total_training_steps=8 \
  | tee "$WORK/run2.log"
# a run that restarted from scratch would have rewritten global_step_3
[[ "$(stat -c %Y "$CKPT/global_step_3/data.pt")" == "$BEFORE" ]] || { echo "FAIL: verl did not resume" >&2; exit 1; }
[[ -f "$DUMPS/8.jsonl" ]] || { echo "FAIL: no rollout dump of step 8" >&2; exit 1; }
python3 "$HERE/check_run.py" "$DUMPS" --batch "$BATCH" --n "$N" --mode "$MODE" --log "$WORK/run2.log"
python3 "$HERE/inspect_checkpoint.py" "$CKPT/global_step_8" --expect-step 8
echo "OK: gdro_verl planned unequal groups and weights, trained, checkpointed and resumed ($MODE, $TRAINER)"
