#!/usr/bin/env bash
# Issue #16's GPU figures in two prepared device calls, each meant to fit one call's 10 minutes:
#
#   bash ../shared/gpu/prepare.sh                       # here, once: fills .whl/ and .data/
#   python -m benchmarks.flax_wmt_train --copy_example_to=.flax_wmt   # their example, no network there
#   run(command='source .whl/env.sh; bash benchmarks/gpu_session.sh step "$OUT"',
#       carry=['.whl', '.data', '.flax_wmt'], timeout_s=600)
#   run(command='source .whl/env.sh; bash benchmarks/gpu_session.sh recipe "$OUT"',
#       carry=['.whl', '.data'], timeout_s=540)
#   run(command='source .whl/env.sh; bash benchmarks/gpu_session.sh decode "$OUT"',
#       carry=['.whl', '.flax_wmt'], timeout_s=300)        # if device time is left
#
# `step`: the bf16 matmul rate; the base
# model's bf16 step at ~25k target tokens with the explicit and the 'auto' (cuDNN) attention;
# the same against the Flax WMT example; the real loop against the bare step on Multi30k at
# K=1 and K=8 steps per call (jit: one device). `recipe` (about 4 min): the Multi30k :preln
# recipe with K=8, jit. `decode` (about 3 min): beam 5 against the Flax WMT example's, tiny at
# batch 16 and base at batch 64, and our searches with and without the cache. Not yet run on a GPU (none was lent since it was written): the part
# timeouts follow ../shared/gpu/README.md (30-40 s to compile a step there, 3.6 training minutes
# for the recipe at K=1).
# Each part has its own timeout and writes <name>.json / <name>.log under the output folder,
# so one failing part costs only itself. Try it here first on tiny settings:
#   GPU_SESSION_SMOKE=1 bash benchmarks/gpu_session.sh step /tmp/gpu_out
#   GPU_SESSION_SMOKE=1 bash benchmarks/gpu_session.sh recipe /tmp/gpu_out
#   GPU_SESSION_SMOKE=1 FLAX_WMT_DIR=<their examples/wmt> bash benchmarks/gpu_session.sh decode /tmp/gpu_out
set -u
part=${1:?usage: gpu_session.sh step|recipe|decode OUTPUT_DIR}
out=${2:?usage: gpu_session.sh step|recipe|decode OUTPUT_DIR}
mkdir -p "$out"
data=${GPU_SESSION_DATA:-.data/multi30k}
[ -d "$data" ] || data=../shared/data/multi30k
smoke=${GPU_SESSION_SMOKE:-0}

part_run() {           # part_run NAME SECONDS COMMAND...: JSON (last stdout line) and log
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.stdout" 2> "$out/$name.log"
  local rc=$?
  tail -n 1 "$out/$name.stdout" > "$out/$name.json"
  echo "$name: rc=$rc, $((SECONDS - start)) s: $(cut -c1-300 "$out/$name.json")"
}

if [ "$smoke" = 1 ]; then
  matmul_n=512
  base=(--setting=tiny --vocab_size=1000 --length=16)
  step_tokens=(--tokens=256)
  flax_rows=(--rows=16)
  loop=(--steps=30 --warmup_steps=10 --bare_steps=10 --checkpoint_every_steps=20
        --experiment=experiments/multi30k.py:smoke)
  recipe=(--experiment=experiments/multi30k.py:smoke)
  decode_sizes=("--setting=tiny --vocab_size=1000 --batch=4 --src_len=8 --out_len=8")
else
  matmul_n=8192
  base=(--setting=base --vocab_size=37000 --length=64)
  step_tokens=(--tokens=24576)
  flax_rows=(--rows=384)
  loop=(--steps=1000 --warmup_steps=100 --bare_steps=200 --checkpoint_every_steps=200
        --experiment=experiments/multi30k.py:preln)
  recipe=(--experiment=experiments/multi30k.py:preln)
  decode_sizes=("--setting=tiny --vocab_size=8000 --batch=16 --src_len=32 --out_len=64"
                "--setting=base --vocab_size=37000 --batch=64 --src_len=32 --out_len=64")
fi

case "$part" in
  step)
    nvidia-smi --query-gpu=name,memory.total --format=csv > "$out/gpu.txt" 2>&1
    part_run matmul_bf16 60 python -c '
import json, sys, time, jax, jax.numpy as jnp
n = int(sys.argv[1]); a = jnp.ones((n, n), jnp.bfloat16); f = jax.jit(lambda a: a @ a)
f(a).block_until_ready(); t = time.perf_counter()
for _ in range(20): r = f(a)
r.block_until_ready(); s = (time.perf_counter() - t) / 20
print(json.dumps({"bf16_matmul_tflops": round(2 * n ** 3 / s / 1e12, 3), "n": n,
                  "device": jax.devices()[0].device_kind}))' "$matmul_n"
    for impl in explicit auto; do
      part_run "step_base_bf16_$impl" 120 python benchmarks/train_step_speed.py "${base[@]}" \
        "${step_tokens[@]}" --dtype=bfloat16 --parallelism=jit --attention_impl=$impl
    done
    part_run flax_train_base_bf16 150 python -m benchmarks.flax_wmt_train "${base[@]}" \
      "${flax_rows[@]}" --dtype=bfloat16 --attention_impl=auto --steps=5 --pairs=3 \
      --flax_wmt_dir="${FLAX_WMT_DIR:-.flax_wmt}"
    for k in 1 8; do
      part_run "loop_k$k" 170 python benchmarks/loop_speed.py "${loop[@]}" --steps_per_loop=$k \
        --experiment.data.raw_dir="$data" --experiment.train.parallelism=jit
    done
    ;;
  recipe)
    work=$(mktemp -d)
    part_run recipe_preln_k8 480 python launch.py "${recipe[@]}" --workdir="$work/m30k" \
      --experiment.data.raw_dir="$data" --experiment.train.steps_per_loop=8 \
      --experiment.train.parallelism=jit
    cp "$work"/m30k/*.json "$out/" 2>/dev/null
    grep -h -E "bleu|steps/s" "$out/recipe_preln_k8.log" | tail -n 20 > "$out/recipe_summary.txt"
    rm -rf "$work"
    ;;
  decode)
    for sizes in "${decode_sizes[@]}"; do
      name=$(echo "$sizes" | sed -E 's/--setting=([a-z]+).*--batch=([0-9]+).*/\1_b\2/')
      # shellcheck disable=SC2086  # the sizes are flags, split on purpose
      part_run "flax_decode_$name" 120 python -m benchmarks.flax_wmt $sizes --repeats=3 \
        --flax_wmt_dir="${FLAX_WMT_DIR:-.flax_wmt}"
      # shellcheck disable=SC2086
      part_run "decode_speed_$name" 120 python -m benchmarks.decode_speed $sizes --repeats=3
    done
    ;;
  *)
    echo "unknown part $part: use step, recipe or decode" >&2
    exit 2
    ;;
esac
