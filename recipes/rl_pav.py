r"""Stage 4: online RL (GRPO or RLOO) with per-step PAV advantages added to the outcome advantage.

    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml \
        recipes/rl_pav.py --config recipes/configs/arithmetic/rl_pav.yaml

`algorithm: rloo` (YAML) or `--algorithm rloo` picks `PAVRLOOTrainer`. Arguments: `trl_pav.scripts.rl` (TRL-style:
YAML keys, CLI overrides, `env:` blocks, `--use_peft`, `--load_in_4bit`). The same code runs as `trl-pav rl`.
"""

import json

from trl_pav.scripts import rl
from trl_pav.scripts.common import run_recipe

if __name__ == "__main__":
    result = run_recipe(rl)
    if result is not None:
        print(json.dumps(result))
