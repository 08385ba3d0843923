#!/usr/bin/env bash
# Short, equal-budget comparison of every baseline and ablation on CIFAR-10-LT IF100, then the
# report (Markdown table + figures). Reproduction script, not a test.
#
#   DATA_ARGS="--config.data.manual_dir=DIR --config.data.download=False" \
#     bash bench/baselines_short.sh OUT_ROOT
#
# Budget (env, defaults = the 2-core CPU run in bench/RESULTS.md): ENCODER (cifar_resnet8, a
# proxy), E (supervised epochs, 6), E1 (BNS/SupCon stage-1 epochs, 3: two views each, so about
# the forward/backward passes of E), E2 (stage-2 epochs, 4, re-draw every E2/2), SEED (0).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: baselines_short.sh OUT_ROOT}
ENCODER=${ENCODER:-cifar_resnet8}; E=${E:-6}; E1=${E1:-3}; E2=${E2:-4}; SEED=${SEED:-0}
COMMON="${DATA_ARGS:-} --config.model.encoder=$ENCODER --config.seed=$SEED"
COMMON="$COMMON --config.train.eval_every_epochs=0 --config.train.checkpoint_every_steps=200"
SUP="--config.ce.epochs=$E --config.ce.optim.warmup_epochs=1"
BNS="--config.stage1.epochs=$E1 --config.stage1.batch_size=256"
BNS="$BNS --config.stage1.optim.warmup_epochs=0.5 --config.stage2.epochs=$E2"
BNS="$BNS --config.stage2.redraw_every_epochs=$((E2 / 2)) --config.stage2.optim.warmup_epochs=0.5"
mkdir -p "$OUT"
go() {  # go NAME CONFIG ARGS...
  local name=$1 config=$2; shift 2
  echo "== $name ($(date +%T))"
  python run.py --config="$config" --workdir="$OUT/$name" $COMMON "$@" > "$OUT/$name.log" 2>&1
}
for m in ce cb_resample balanced_softmax logit_adjust; do
  cfg=configs/baselines/${m}_cifar10_lt.py
  go "$m" "$cfg" $SUP
done
go ldam_drw configs/baselines/ldam_drw_cifar10_lt.py $SUP --config.ce.drw_start_epoch=$((E * 4 / 5))
go crt configs/baselines/crt_cifar10_lt.py $SUP
# BNS (reference form) stage 1 + probe once; the three stage-2 samplers continue copies of it.
go bns_structured configs/cifar10_lt.py $BNS --stages=stage1,probe
for m in uniform alg1; do cp -r "$OUT/bns_structured" "$OUT/bns_$m"; done
go bns_structured configs/cifar10_lt.py $BNS
go bns_uniform configs/baselines/bns_uniform_cifar10_lt.py $BNS
go bns_alg1 configs/baselines/bns_alg1_cifar10_lt.py $BNS
go bns_paper_form configs/baselines/bns_paper_form_cifar10_lt.py $BNS
go supcon configs/baselines/supcon_cifar10_lt.py $BNS
python -m ltr_jax.report "$OUT"/ce "$OUT"/cb_resample "$OUT"/balanced_softmax "$OUT"/logit_adjust \
  "$OUT"/ldam_drw "$OUT"/crt "$OUT"/bns_structured "$OUT"/bns_uniform "$OUT"/bns_alg1 \
  "$OUT"/bns_paper_form "$OUT"/supcon \
  --labels="CE,CB-resample,BalancedSoftmax,LogitAdjust,LDAM-DRW,cRT,BNS+IP-DPP,BNS+uniform,BNS+Alg1,BNS-paper+IP-DPP,SupCon+IP-DPP" \
  --out="$OUT/report"
