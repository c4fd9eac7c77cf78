#!/usr/bin/env bash
# Wall time and peak memory of every stage of one real-data CPU setting (settings/dvc.yaml), stage by stage.
#
#   benchmarks/setting_timing.sh SETTING_FOLDER OUT.tsv [STAGE ...]
#
# Runs, from SETTING_FOLDER (a folder with a params.yaml: settings/celeba_cpu, or a copy of it whose
# data.root points elsewhere), the same commands as the stages of settings/dvc.yaml, in their order, each
# under GNU time. OUT.tsv gets one line per stage: name, seconds, peak resident memory in MB (the stage's
# process and its children, the notebook kernel included). Stages reuse what is already there (a finished
# pool, checkpoints): run it in a fresh folder for a fresh-clone time. Naming stages runs only those (e.g. after a
# change of generate.guidance: generate repair mask finetune evaluate), appending to OUT.tsv.
set -euo pipefail
setting=$(cd "$1" && pwd)
out=$(realpath -m "$2")
repo=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$repo/.venv/bin:$PATH"
cd "$setting"
seeds=$(python -c "from aimfair.config import load_params; print(*load_params('params.yaml').seeds)")
nb() { echo "aimfair notebook $repo/notebooks/$1.ipynb outputs/notebooks/$2.ipynb ${3:-}"; }
stages=("data|$(nb 00_data 00_data)" "prompts|$(nb 01_prompts 01_prompts)" "generator|aimfair dataset-generator"
        "generator_samples|$(nb 02_generator 02_generator)" "generate|$(nb 03_generate 03_generate)"
        "repair|aimfair repair")
for seed in $seeds; do stages+=("pretrain@$seed|$(nb 04_pretrain 04_pretrain_seed$seed "-p seed=$seed")"); done
stages+=("mask|$(nb 05_mask 05_mask)" "finetune|$(nb 06_finetune 06_finetune)" "evaluate|$(nb 07_evaluate 07_evaluate)")
only=" ${*:3} "
[ -n "${*:3}" ] || printf "stage\tseconds\tpeak_rss_mb\n" > "$out"
for entry in "${stages[@]}"; do
  name=${entry%%|*}; cmd=${entry#*|}
  [ -z "${*:3}" ] || [[ "$only" == *" ${name%%@*} "* ]] || continue
  echo "=== $name: $cmd" >&2
  /usr/bin/time -f "%e %M" -o "$out.time" $cmd
  read -r seconds kb < "$out.time"
  printf "%s\t%s\t%d\n" "$name" "$seconds" "$((kb / 1024))" >> "$out"
  echo "=== $name: $seconds s, $((kb / 1024)) MB" >&2
done
rm -f "$out.time"
