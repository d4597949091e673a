#!/usr/bin/env bash
# GRPO with Prompt-GDRO, Rollout-GDRO or both on GSM8K, Qwen2.5-0.5B-Instruct, verl 0.9.1.
#
#   bash examples/verl/run_gdro_grpo.sh [prompt|rollout|both|off] [extra Hydra overrides...]
#
# Needs: a CUDA machine with verl 0.9.1 and vLLM installed (pip install "verl[vllm]==0.9.1"),
# gdro installed in the same environment (pip install -e ".[verl]" from the gdro checkout, which
# registers the verl.plugins entry point), and the data from examples/verl/prepare_gsm8k.py.
# Environment: DATA_DIR (default ~/data/gsm8k), N_GPUS (default: all visible GPUs; sets
# trainer.n_gpus_per_node, so do not pass that override too), TRAINER=v1 (default, verl's V1
# sync trainer) or TRAINER=v0 (legacy RayPPOTrainer).
# Checkpoints go to checkpoints/<project>/<experiment>; rerunning resumes (trainer.resume_mode=auto),
# gdro's controller included.
set -euo pipefail

MODE="${1:-prompt}"
shift || true
case "$MODE" in
  prompt|rollout|both|off) ;;
  *) echo "usage: $0 [prompt|rollout|both|off] [hydra overrides...]; got '$MODE'" >&2; exit 2 ;;
esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA_DIR="${DATA_DIR:-$HOME/data/gsm8k}"
N_GPUS="${N_GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}"
TRAINER="${TRAINER:-v1}"
if [[ "$N_GPUS" -lt 1 ]]; then
  echo "no GPU found: the verl trainer needs CUDA GPUs and a rollout server (vLLM)" >&2
  exit 1
fi
if [[ ! -f "$DATA_DIR/train.parquet" ]]; then
  python3 "$HERE/prepare_gsm8k.py" --out "$DATA_DIR"
fi
# The plugin must be importable wherever Ray starts a verl process.
python3 -c "import gdro_verl.plugin" || { echo "gdro_verl is not installed in this environment" >&2; exit 1; }

# An empty array expands with ${a[@]+"${a[@]}"}: bash before 4.4 treats "${a[@]}" of an empty
# array as an unbound variable under set -u.
TRAINER_ARGS=()
if [[ "$TRAINER" == "v0" ]]; then
  TRAINER_ARGS=(trainer.use_v1=false)
fi

python3 -m verl.trainer.main_ppo \
  --config-path="$HERE" --config-name=gdro_grpo \
  gdro="$MODE" \
  data.train_files="$DATA_DIR/train.parquet" \
  data.val_files="$DATA_DIR/test.parquet" \
  trainer.n_gpus_per_node="$N_GPUS" \
  trainer.experiment_name="qwen2.5-0.5b-gsm8k-gdro-$MODE-$TRAINER" \
  ${TRAINER_ARGS[@]+"${TRAINER_ARGS[@]}"} \
  "$@"
