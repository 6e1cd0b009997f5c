r"""Stage 2: Monte-Carlo step labels under a Best-of-K prover (the paper: n_mc = 20, Bo4, first pit).

    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml \
        recipes/label.py --config recipes/configs/arithmetic/label.yaml

Arguments: `trl_pav.scripts.label` (TRL-style: YAML keys, CLI overrides, `env:` blocks, `--use_peft`,
`--load_in_4bit`). The same code runs as `trl-pav label`.
"""

import json

from trl_pav.scripts import label
from trl_pav.scripts.common import run_recipe

if __name__ == "__main__":
    result = run_recipe(label)
    if result is not None:
        print(json.dumps(result))
