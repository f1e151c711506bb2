#!/bin/bash
# Device probe: why does the coarse stage not learn? Trains the coarse stage only, in parallel variants, on the
# row-4 data (rendered + TotalSegmentator CT, and the CHAOS target scans with their labels) or on CT only, for
# BUDGET seconds each, and keeps each variant's nnU-Net training log (pseudo Dice per epoch).
# Prepared by benchmarks/device/prepare_uda_gpu.sh (same .devrun); run as
#   bash .devrun/probe.sh [BUDGET_SECONDS]          with carry [".devrun"]
BUDGET=${1:-150}
source .devrun/setup.sh
python3 - <<'PYEOF' || exit 4
import copy, json
from pathlib import Path
from training.uda_bench.protocol import load_profile
from training.uda_bench.steps import body_masks, prepare_data, render
w, data = Path("/tmp/w"), Path("/tmp/real")
prepare_data(data, w); body_masks(data, w); render(w, 0)
profile = load_profile("gpu").spec
def variant(**coarse):
    s = copy.deepcopy(profile); s["coarse"].update(coarse); return s
# "base" = the coarse net of the profiles until 2026-11-27 (4 stages, 8..64 features); "deep" = the one now in them
old_net = dict(n_conv_per_stage=2, n_conv_per_stage_decoder=2, features_per_stage=[8, 16, 32, 64],
               strides=[[1, 1, 1]] + [[2, 2, 2]] * 3)
specs = {
    "base": variant(network=old_net),
    "wide": variant(network=dict(old_net, features_per_stage=[16, 32, 64, 128])),
    "deep": variant(network=dict(old_net, features_per_stage=[16, 32, 64, 128, 256],
                                 strides=[[1, 1, 1]] + [[2, 2, 2]] * 4)),
    "patch64": variant(network=old_net, patch_size=[48, 64, 64]),
}
for k, s in specs.items():
    Path(f"/tmp/spec_{k}.json").write_text(json.dumps(s))
PYEOF
echo "render done $(( $(date +%s) - T0 )) s"
CT="ct=/tmp/w/ct/images,/tmp/w/ct/labels"
MR="chaos=/tmp/w/data/target_images,/tmp/w/data/target_labels"
probe() {  # name spec sources... -- extra train args
  local name=$1 spec=$2; shift 2
  local src=() extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do src+=(--source "$1"); shift; done
  [ "$1" = "--" ] && shift && extra=("$@")
  local W=/tmp/p/$name
  { python3 -m training.c2f convert --work $W --spec /tmp/spec_$spec.json --workers 2 "${src[@]}" &&
    python3 -m training.c2f plan --work $W --workers 2 &&
    python3 -m training.c2f train --work $W --stage coarse --trainer nnUNetTrainerC2F_lr3en4 --device cuda \
      --workers 2 --epochs 200 --iterations 50 --val-iterations 6 --time-budget $BUDGET "${extra[@]}"; } \
    > /tmp/p_$name.log 2>&1
  echo "$name rc $? at $(( $(date +%s) - T0 )) s"
}
mkdir -p /tmp/p
probe base base "$CT" "$MR" &
probe lr1e3 base "$CT" "$MR" -- --lr 1e-3 &
probe wide wide "$CT" "$MR" &
probe deep deep "$CT" "$MR" &
probe patch64 patch64 "$CT" "$MR" &
probe ctonly base "$CT" &
wait
for d in /tmp/p/*; do n=$(basename $d); cp $d/nnUNet_results/*/*/fold_all/training_log*.txt $OUT/log_$n.txt 2>/dev/null; done
tar czf $OUT/probe_logs.tgz -C /tmp p_*.log 2>/dev/null
python3 - <<'PYEOF'
import glob, re
for f in sorted(glob.glob("/tmp/p/*/nnUNet_results/*/*/fold_all/training_log*.txt")):
    name = f.split("/")[3]
    txt = open(f).read()
    dice = re.findall(r"Pseudo dice \[(.*?)\]", txt)
    loss = re.findall(r"train_loss (\S+)", txt)
    last = [float(v) if "nan" not in v else float("nan") for v in re.findall(r"np\.float32\(([^)]*)\)", dice[-1])] if dice else []
    print(f"{name:8s} epochs {len(loss)} loss {loss[0] if loss else '-'} -> {loss[-1] if loss else '-'}; last pseudo dice "
          f"liver {last[0] if last else '-'} rk {last[1] if last else '-'} spleen {last[2] if last else '-'} lk {last[12] if last else '-'}")
PYEOF
ls -la $OUT; echo "total $(( $(date +%s) - T0 )) s"
