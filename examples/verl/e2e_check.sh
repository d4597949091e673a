#!/usr/bin/env bash
# GPU end-to-end check of gdro_verl: train, checkpoint, resume, and verify the controller.
#
#   bash examples/verl/e2e_check.sh [prompt|rollout|both|off]     # TRAINER=v1 (default) or v0
#
# 1. trains 3 steps (checkpoints at steps 2 and 3) and checks that gdro/ metrics were logged;
# 2. checks that global_step_3/data.pt holds a controller with exactly 3 updates;
# 3. reruns with 4 steps: verl resumes from global_step_3 (trainer.resume_mode=auto) and the
#    controller of global_step_4 has exactly 4 updates, i.e. it continued, not restarted.
# Needs what run_gdro_grpo.sh needs (CUDA GPUs, verl 0.9.1 + vLLM, gdro). About 10-20 minutes on
# one 80 GB GPU with the 0.5B model.
set -euo pipefail

MODE="${1:-both}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TRAINER="${TRAINER:-v1}"
WORK="${WORK:-$(mktemp -d /tmp/gdro-e2e-XXXX)}"
CKPT="$WORK/checkpoints"
SMALL=(
  data.train_batch_size=32
  actor_rollout_ref.actor.ppo_mini_batch_size=16
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8
  trainer.save_freq=2
  trainer.test_freq=-1
  trainer.val_before_train=false
  trainer.default_local_dir="$CKPT"
)

echo "== 1. train 3 steps ($MODE, $TRAINER) -> $WORK"
bash "$HERE/run_gdro_grpo.sh" "$MODE" "${SMALL[@]}" trainer.total_training_steps=3 | tee "$WORK/run1.log"
grep -q "gdro/pass@1" "$WORK/run1.log" || { echo "FAIL: no gdro/ metrics in the log" >&2; exit 1; }
grep -q "gdro/rollout/shadow_price" "$WORK/run1.log" || { echo "FAIL: no controller metrics" >&2; exit 1; }

echo "== 2. controller state in global_step_3"
python3 "$HERE/inspect_checkpoint.py" "$CKPT/global_step_3" --expect-step 3

echo "== 3. resume to step 4"
BEFORE="$(stat -c %Y "$CKPT/global_step_2/data.pt")"
bash "$HERE/run_gdro_grpo.sh" "$MODE" "${SMALL[@]}" trainer.total_training_steps=4 | tee "$WORK/run2.log"
# a run that restarted from scratch would have rewritten global_step_2
[[ "$(stat -c %Y "$CKPT/global_step_2/data.pt")" == "$BEFORE" ]] || { echo "FAIL: verl did not resume" >&2; exit 1; }
python3 "$HERE/inspect_checkpoint.py" "$CKPT/global_step_4" --expect-step 4
echo "OK: gdro_verl trained, checkpointed and resumed its controller ($MODE, $TRAINER)"
