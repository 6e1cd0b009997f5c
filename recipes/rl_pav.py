r"""Stage 4: online RL (GRPO or RLOO) with per-step PAV advantages added to the outcome advantage.

    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml \
        recipes/rl_pav.py --config recipes/configs/arithmetic/rl_pav.yaml

`algorithm: rloo` (YAML) or `--algorithm rloo` picks `PAVRLOOTrainer`. Arguments: `trl_pav.scripts.rl` (TRL-style:
YAML keys, CLI overrides, `env:` blocks, `--use_peft`, `--load_in_4bit`). The same code runs as `trl-pav rl`.
"""

import json
import sys

from trl_pav.scripts.common import run_recipe
from trl_pav.scripts.rl import algorithm_from_argv, main, make_parser

if __name__ == "__main__":
    result = run_recipe(make_parser(algorithm_from_argv(sys.argv[1:])), main)
    if result is not None:
        print(json.dumps(result))
