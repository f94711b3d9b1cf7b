"""`python -m tselect` with one more warmup preset, "exact", for the torchrun tests.

Run as a script (`torchrun ... tests/warmup/launch.py warmup --preset exact ...`). The preset
is the tiny model's recipe with LoRA dropout 0: dropout masks are drawn per rank, so with
dropout a data-parallel run could not match one process. 12 of the 24 toy rows, micro-batch 4,
8 rows per step: each epoch is a full step and a 4-row step, so under 2 ranks the second step
needs the data-parallel padding (without it accelerate would repeat 4 rows).
"""

from tselect.cli import main
from tselect.training import TrainConfig
from tselect.warmup import WARMUP_PRESETS, WarmupRecipe

EXACT = WarmupRecipe(train=TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, lr=1e-2, epochs=2, batch_size=4,
                                       effective_batch_size=8, warmup_ratio=0.0, max_length=64,
                                       target_modules=("q_proj", "k_proj", "v_proj", "o_proj")),
                     fraction=0.5, min_examples=8)

if __name__ == "__main__":
    WARMUP_PRESETS["exact"] = EXACT
    main()
