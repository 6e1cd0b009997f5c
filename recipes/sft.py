r"""Stage 1: SFT of the base policy, or rejection fine-tuning on its correct traces.

    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml \
        recipes/sft.py --config recipes/configs/arithmetic/sft.yaml

Arguments: `trl_pav.scripts.sft` (TRL-style: YAML keys, CLI overrides, `env:` blocks, `--use_peft`,
`--load_in_4bit`). The same code runs as `trl-pav sft`.
"""

import json

from trl_pav.scripts import sft
from trl_pav.scripts.common import run_recipe

if __name__ == "__main__":
    result = run_recipe(sft)
    if result is not None:
        print(json.dumps(result))
