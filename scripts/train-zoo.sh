#!/usr/bin/env bash
# Train (or continue) the shipped model zoo, one model at a time, then measure and card it.
#
#   scripts/train-zoo.sh MINUTES [MODEL ...]     e.g. scripts/train-zoo.sh 90 python-lstm
#
# Each model continues where it stands: from its resume state (runs/NAME/resume.pt) when there
# is one, else from its committed weights (--init, fresh optimizer at a lower learning rate; the
# folder keeps its weights unless validation beats them), else from scratch. A CUDA GPU is used
# when torch sees one. After training: bench/zoo_eval.py --write-card (validation bpc, best probe
# units) and `rnnscope atlas` (the neuron pages' data).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:?usage: scripts/train-zoo.sh MINUTES [MODEL ...]}
shift
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(austen-lstm austen-gru austen-rnn python-lstm)
py=.venv/bin/python
rnnscope=.venv/bin/rnnscope
device=$($py -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")

# name -> corpus file and architecture (comparable parameter budgets for the three Austen cells)
declare -A data=([austen-lstm]=data/austen.txt [austen-gru]=data/austen.txt [austen-rnn]=data/austen.txt
                 [python-lstm]=data/python.txt)
declare -A arch=([austen-lstm]="--cell lstm --hidden 512" [austen-gru]="--cell gru --hidden 600"
                 [austen-rnn]="--cell rnn --hidden 1024" [python-lstm]="--cell lstm --hidden 512")

[ -f data/austen.txt ] || $rnnscope corpus austen --out data/austen.txt
[ -f data/python.txt ] || $rnnscope corpus python-stdlib --out data/python.txt

for name in "${models[@]}"; do
  [ -n "${data[$name]:-}" ] || { echo "unknown zoo model $name (one of: ${!data[*]})" >&2; exit 2; }
  common=(--data "${data[$name]}" --out "models/zoo/$name" --layers 2 --seq-len 200 --batch 32
          --eval-every 500 --time-budget "$minutes" --device "$device")
  if [ -f "runs/$name/resume.pt" ]; then
    how=(--resume)
  elif [ -f "models/zoo/$name/config.json" ]; then
    how=(--init "models/zoo/$name" --lr 1e-3 --lr-min 1e-4 --steps 3000)
  else
    how=(${arch[$name]} --lr 2e-3 --lr-min 2e-4 --steps 3000)
  fi
  echo "== $name: ${how[*]} (${minutes} min on $device)"
  $rnnscope train "${common[@]}" "${how[@]}" --no-progress
  $py bench/zoo_eval.py --models "$name" --write-card
  $rnnscope atlas "$name"
done
