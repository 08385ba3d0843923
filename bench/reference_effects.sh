#!/usr/bin/env bash
# Measured effects of the released-code switches (README "Differences from the released code"),
# at one short CPU budget on CIFAR-10 (JPEG copy)-LT IF100. Reproduction script, not a test.
#
#   DATA_ARGS="--config.data.manual_dir=DIR --config.data.download=False ..." \
#     bash bench/reference_effects.sh OUT_ROOT
#
# One stage 1 (BNS, ResNet-8 proxy, E1 epochs at B 256) shared by three probes of PE epochs:
# ours (clean features, last partial batch dropped), probe.augment=simclr (s = 2, BatchNorm in
# train mode, as released) and probe.drop_last=False. With STAGE1_SWITCHES=1, stage 1 + probe
# again for each stage-1 switch: model.init=torch, stage1.views_through_bn=separate,
# model.bn_running_var=unbiased (a stage 1 each: about 16 min on the loaded CPU-2). Resumable:
# rerun the same command. Logs: OUT_ROOT/NAME.log; probe top-1: OUT_ROOT/NAME/probe/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: reference_effects.sh OUT_ROOT}
ENCODER=${ENCODER:-cifar_resnet8}; E1=${E1:-3}; PE=${PE:-20}; SEED=${SEED:-0}
COMMON="${DATA_ARGS:-} --config.model.encoder=$ENCODER --config.seed=$SEED"
COMMON="$COMMON --config.train.eval_every_epochs=0 --config.train.checkpoint_every_steps=200"
COMMON="$COMMON --config.stage1.epochs=$E1 --config.stage1.batch_size=256"
COMMON="$COMMON --config.stage1.optim.warmup_epochs=0.5 --config.probe.epochs=$PE"
mkdir -p "$OUT"
go() {  # go NAME ARGS...
  local name=$1; shift
  echo "== $name ($(date +%T))"
  python run.py --config=configs/cifar10_lt.py --workdir="$OUT/$name" $COMMON "$@" \
    > "$OUT/$name.log" 2>&1
}
go base --stages=stage1
runs="probe_none probe_simclr probe_keep_last"
for v in $runs; do [ -d "$OUT/$v" ] || cp -r "$OUT/base" "$OUT/$v"; done
go probe_none --stages=probe
go probe_simclr --stages=probe --config.probe.augment=simclr --config.probe.encoder_bn=train \
  --config.probe.augment_strength=2.0
go probe_keep_last --stages=probe --config.probe.drop_last=False
if [ "${STAGE1_SWITCHES:-0}" = 1 ]; then
  go init_torch --stages=stage1,probe --config.model.init=torch
  go views_separate --stages=stage1,probe --config.stage1.views_through_bn=separate
  go bn_unbiased --stages=stage1,probe --config.model.bn_running_var=unbiased
  runs="$runs init_torch views_separate bn_unbiased"
fi
for run in $runs; do
  python -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], r['top1'], \
r['many'], r['medium'], r['few'], r['num_steps'])" "$OUT/$run/probe/results.json" "$run"
done
